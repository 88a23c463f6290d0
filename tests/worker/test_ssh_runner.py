"""SSHRunner against a real OpenSSH sshd (see tests/sshd.py): no mocks, no fixed sleeps."""
from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from common.output import TRUNCATION_MARKER
from tests.sshd import (
    TEST_HOSTS,
    TEST_KEY_PASSPHRASE,
    ClientKey,
    HungListener,
    SshdServer,
    TestUser,
    find_processes,
    free_port,
    wait_until,
)
from worker.runners.base import ConnectError, ConnectionSpec, StepResult
from worker.runners.ssh import SSHPool, SSHRunner, load_private_key

pytestmark = pytest.mark.timeout(60)


def make_spec(
    server: SshdServer | None,
    user: TestUser,
    key: ClientKey | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    **overrides: Any,
) -> ConnectionSpec:
    fields: dict[str, Any] = dict(
        host=host or (server.addresses[0] if server else "127.0.0.2"),
        port=port or (server.port if server else 22),
        username=user.name,
        connect_timeout=5.0,
    )
    if key is not None:
        fields.update(private_key=key.private_key, passphrase=key.passphrase)
    fields.update(overrides)
    return ConnectionSpec(**fields)


@pytest.fixture
def pool() -> Iterator[SSHPool]:
    p = SSHPool()
    yield p
    p.close_all()


@pytest.fixture
def runner(pool: SSHPool) -> SSHRunner:
    return SSHRunner(pool=pool, kill_grace=2.0)


@pytest.fixture
def spec(sshd: SshdServer, ssh_user: TestUser, client_keys: dict[str, ClientKey]) -> ConnectionSpec:
    return make_spec(sshd, ssh_user, client_keys["ed25519"])


def run(runner: SSHRunner, spec: ConnectionSpec, command: str, **kwargs: Any) -> StepResult:
    session = runner.open(spec)
    try:
        return session.run(command, **kwargs)
    finally:
        session.close()


def connect_error(runner: SSHRunner, spec: ConnectionSpec) -> ConnectError:
    with pytest.raises(ConnectError) as info:
        runner.open(spec)
    return info.value


# --------------------------------------------------------------------------- commands


def test_success_with_stdout_and_stderr(runner: SSHRunner, spec: ConnectionSpec) -> None:
    result = run(runner, spec, "echo out; echo err >&2; echo more")
    assert (result.exit_code, result.error_type, result.error_message) == (0, None, None)
    assert result.stdout == "out\nmore\n"
    assert result.stderr == "err\n"
    assert result.started_at.tzinfo is not None
    assert 0 <= result.duration < 5


def test_nonzero_exit_is_command_failed(runner: SSHRunner, spec: ConnectionSpec) -> None:
    result = run(runner, spec, "echo partial; echo oops >&2; exit 7")
    assert result.exit_code == 7
    assert result.error_type == "command_failed"
    assert "7" in (result.error_message or "")
    assert result.stdout == "partial\n" and result.stderr == "oops\n"


def test_command_without_stdin_sees_eof(runner: SSHRunner, spec: ConnectionSpec) -> None:
    result = run(runner, spec, "cat; echo done", timeout=10)
    assert result.error_type is None and result.stdout == "done\n"


def test_stdin_script(runner: SSHRunner, spec: ConnectionSpec) -> None:
    script = b"set -e\necho \"shell=$0\"\nx=$((6 * 7))\necho \"answer $x\" >&2\nexit 3\n"
    result = run(runner, spec, "/bin/sh -s", stdin=script)
    assert result.stdout == "shell=/bin/sh\n"
    assert result.stderr == "answer 42\n"
    assert (result.exit_code, result.error_type) == (3, "command_failed")


def test_large_stdin_while_output_flows(runner: SSHRunner, spec: ConnectionSpec) -> None:
    # The remote echoes stdin back while we are still sending it: needs concurrent write/read.
    data = os.urandom(3 * 1024 * 1024)
    result = run(runner, spec, "tee /dev/stderr | wc -c", stdin=data, timeout=30)
    assert result.error_type is None
    assert result.stdout.strip() == str(len(data))


def test_remote_shell_is_session_and_group_leader(runner: SSHRunner, spec: ConnectionSpec) -> None:
    """The premise of the remote kill: sshd makes the command's shell a session leader."""
    result = run(runner, spec, "echo $$; cut -d' ' -f5,6 /proc/$$/stat")
    pid, ids = result.stdout.splitlines()
    assert ids.split() == [pid, pid]  # pgid == sid == pid


def test_pid_marker_is_stripped_but_login_noise_kept(runner: SSHRunner, spec: ConnectionSpec) -> None:
    result = run(runner, spec, "echo first")
    assert result.stdout == "first\n"
    assert "__OPSC_" not in result.stdout


def test_output_capped_with_marker(runner: SSHRunner, spec: ConnectionSpec) -> None:
    five_mib = 5 * 1024 * 1024
    result = run(runner, spec, f"head -c {five_mib} /dev/zero | tr '\\0' a; echo -n end >&2", timeout=30)
    assert result.error_type is None
    half = 512 * 1024
    assert result.stdout == "a" * half + TRUNCATION_MARKER.format(n=4194304) + "a" * half
    assert "[... 4194304 bytes truncated by OpsConductor ...]" in result.stdout
    assert result.stderr == "end"


def test_both_streams_flooded_concurrently(runner: SSHRunner, spec: ConnectionSpec) -> None:
    three_mib = 3 * 1024 * 1024
    cmd = f"head -c {three_mib} /dev/zero | tr '\\0' e >&2 & head -c {three_mib} /dev/zero | tr '\\0' o; wait"
    result = run(runner, spec, cmd, timeout=30)
    assert result.error_type is None
    marker = TRUNCATION_MARKER.format(n=three_mib - 1024 * 1024)
    half = "o" * (512 * 1024)
    assert result.stdout == half + marker + half
    half = "e" * (512 * 1024)
    assert result.stderr == half + marker + half


def test_invalid_utf8_replaced(runner: SSHRunner, spec: ConnectionSpec) -> None:
    result = run(runner, spec, r"printf 'ok \377\376 end\n'; printf '\303' >&2")
    assert result.error_type is None
    assert result.stdout == "ok \ufffd\ufffd end\n"
    assert result.stderr == "\ufffd"


def test_utf8_output(runner: SSHRunner, spec: ConnectionSpec) -> None:
    result = run(runner, spec, "printf 'h\\303\\251llo \\342\\202\\254\\n'")
    assert result.stdout == "héllo €\n"


def _watch_for(marker: str, seen: threading.Event, stop: threading.Event) -> None:
    while not stop.is_set():
        if find_processes(marker):
            seen.set()
            return
        stop.wait(0.01)


def test_timeout_kills_remote_process_group(runner: SSHRunner, spec: ConnectionSpec) -> None:
    tag = f"{30 + secrets.randbelow(1000) / 1000 + 0.0001:.4f}"  # e.g. sleep 30.4171: unique on the host
    child_tag = f"{31 + secrets.randbelow(1000) / 1000 + 0.0001:.4f}"
    seen, stop = threading.Event(), threading.Event()
    watcher = threading.Thread(target=_watch_for, args=(f"sleep {child_tag}", seen, stop))
    watcher.start()
    try:
        t0 = time.monotonic()
        # A background child and a foreground sleep: both are in the shell's process group.
        result = run(runner, spec, f"sleep {child_tag} & echo started; sleep {tag}; echo unreachable", timeout=1)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        watcher.join()
    assert seen.is_set(), "the remote command never started"
    assert result.error_type == "timeout"
    assert result.exit_code is None
    assert result.stdout == "started\n"
    assert 1 <= elapsed < 4
    wait_until(lambda: not find_processes(f"sleep {tag}") and not find_processes(f"sleep {child_tag}"),
               timeout=2, message="remote sleeps to be killed")


def test_term_ignoring_group_is_killed_after_grace(pool: SSHPool, spec: ConnectionSpec) -> None:
    runner = SSHRunner(pool=pool, kill_grace=0.3)
    tag = f"{33 + secrets.randbelow(1000) / 1000 + 0.0001:.4f}"
    t0 = time.monotonic()
    result = run(runner, spec, f"trap '' TERM; echo armed; sleep {tag}", timeout=0.5)  # SIG_IGN is inherited
    elapsed = time.monotonic() - t0
    assert result.error_type == "timeout"
    assert result.stdout == "armed\n"  # the trap was in place before the timeout
    assert 0.5 + 0.3 <= elapsed < 3  # TERM was ignored for the whole grace, then KILL
    wait_until(lambda: not find_processes(f"sleep {tag}"), timeout=2, message="TERM-ignoring sleep killed")


def test_timeout_after_command_closed_its_output(runner: SSHRunner, spec: ConnectionSpec) -> None:
    # EOF arrives long before the exit status: the timeout must still apply.
    tag = f"{34 + secrets.randbelow(1000) / 1000 + 0.0001:.4f}"
    result = run(runner, spec, f"echo bye; exec >/dev/null 2>&1; sleep {tag}", timeout=1)
    assert result.error_type == "timeout"
    assert result.stdout == "bye\n"
    wait_until(lambda: not find_processes(f"sleep {tag}"), timeout=2, message="sleep killed")


def test_cancel_mid_command(runner: SSHRunner, spec: ConnectionSpec) -> None:
    tag = f"{32 + secrets.randbelow(1000) / 1000 + 0.0001:.4f}"
    flag = f"/tmp/opsc-started-{secrets.token_hex(6)}"
    cancel = threading.Event()

    def cancel_when_started() -> None:
        wait_until(lambda: os.path.exists(flag), timeout=10, message="command start")
        cancel.set()

    canceller = threading.Thread(target=cancel_when_started)
    canceller.start()
    try:
        t0 = time.monotonic()
        result = run(runner, spec, f"touch {flag}; sleep {tag}; echo unreachable", cancel=cancel, timeout=20)
        elapsed = time.monotonic() - t0
        canceller.join()
        assert result.error_type == "cancelled"
        assert result.exit_code is None
        assert "unreachable" not in result.stdout
        assert elapsed < 5
        wait_until(lambda: not find_processes(f"sleep {tag}"), timeout=2, message="remote sleep to be killed")
    finally:
        if os.path.exists(flag):
            os.unlink(flag)


def test_cancel_before_start_runs_nothing(runner: SSHRunner, spec: ConnectionSpec) -> None:
    flag = f"/tmp/opsc-never-{secrets.token_hex(6)}"
    cancel = threading.Event()
    cancel.set()
    result = run(runner, spec, f"touch {flag}", cancel=cancel)
    assert result.error_type == "cancelled"
    assert not os.path.exists(flag)


def test_session_runs_several_commands(runner: SSHRunner, spec: ConnectionSpec) -> None:
    with runner.open(spec) as session:
        assert session.run("echo 1").stdout == "1\n"
        assert session.run("exit 2").exit_code == 2
        assert session.run("echo 3").stdout == "3\n"


# --------------------------------------------------------------------------- hosts


def test_three_distinct_loopback_hosts(runner: SSHRunner, sshd: SshdServer, ssh_user: TestUser,
                                       client_keys: dict[str, ClientKey], pool: SSHPool) -> None:
    assert set(TEST_HOSTS) <= set(sshd.addresses)
    for host in TEST_HOSTS:
        spec = make_spec(sshd, ssh_user, client_keys["ed25519"], host=host)
        result = run(runner, spec, "echo $SSH_CONNECTION")
        assert result.error_type is None
        assert result.stdout.split()[2] == host  # the server address this connection reached
    assert pool.connects == 3  # one transport per host, none shared across hosts


# --------------------------------------------------------------------------- unreachable


def test_refused_port_is_unreachable(runner: SSHRunner, ssh_user: TestUser, client_keys: dict[str, ClientKey]) -> None:
    port = free_port(("127.0.0.2",))
    err = connect_error(runner, make_spec(None, ssh_user, client_keys["ed25519"], port=port))
    assert err.error_type == "unreachable"
    assert "refused" in err.message


def test_hung_host_hits_banner_timeout_quickly(
    runner: SSHRunner, hung_listener: HungListener, ssh_user: TestUser, client_keys: dict[str, ClientKey]
) -> None:
    spec = make_spec(None, ssh_user, client_keys["ed25519"], host=hung_listener.address,
                     port=hung_listener.port, connect_timeout=1.0)
    t0 = time.monotonic()
    err = connect_error(runner, spec)
    elapsed = time.monotonic() - t0
    assert err.error_type == "unreachable"
    assert "banner" in err.message
    assert 0.9 <= elapsed < 3.0  # the deliberate 1 s, not paramiko's 15 s default
    assert hung_listener.accepted >= 1


def test_phase_timeouts_derive_from_connect_timeout(runner: SSHRunner, ssh_user: TestUser) -> None:
    banner, kex, auth = runner.timeouts(make_spec(None, ssh_user, connect_timeout=4.0))
    assert (banner, kex, auth) == (4.0, 4.0, 8.0)
    override = SSHRunner(pool=runner.pool, banner_timeout=0.5, auth_timeout=3.0)
    assert override.timeouts(make_spec(None, ssh_user, connect_timeout=4.0)) == (0.5, 4.0, 3.0)


# --------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("key_name", ["ed25519", "rsa", "ecdsa", "rsa_pem", "ed25519_passphrase"])
def test_key_types(runner: SSHRunner, sshd: SshdServer, ssh_user: TestUser,
                   client_keys: dict[str, ClientKey], key_name: str) -> None:
    spec = make_spec(sshd, ssh_user, client_keys[key_name])
    result = run(runner, spec, "id -un")
    assert result.error_type is None
    assert result.stdout == f"{ssh_user.name}\n"


def test_a_passphrase_key_is_parsed_once_for_many_connections(sshd: SshdServer, ssh_user: TestUser,
                                                             client_keys: dict[str, ClientKey]) -> None:
    key = client_keys["ed25519_passphrase"]
    runner = SSHRunner(pool=SSHPool(max_idle_per_key=0))  # nothing pooled: every run connects anew
    for _ in range(3):
        assert run(runner, make_spec(sshd, ssh_user, key), "true").exit_code == 0
    assert runner.pool.connects == 3 and len(runner.keys) == 1

    wrong = make_spec(sshd, ssh_user, key, passphrase="not the passphrase")
    assert connect_error(runner, wrong).error_type == "auth_failed"  # another digest: parsed, and refused
    assert len(runner.keys) == 1


@pytest.mark.parametrize(
    "key_name,expected",
    [("ed25519", "ssh-ed25519"), ("rsa", "ssh-rsa"), ("ecdsa", "ecdsa-sha2-nistp256"),
     ("rsa_pem", "ssh-rsa"), ("ed25519_passphrase", "ssh-ed25519")],
)
def test_key_type_detected_from_text(client_keys: dict[str, ClientKey], key_name: str, expected: str) -> None:
    key = client_keys[key_name]
    assert load_private_key(key.private_key, key.passphrase).get_name() == expected


def test_password_auth(runner: SSHRunner, sshd: SshdServer, ssh_user: TestUser) -> None:
    spec = make_spec(sshd, ssh_user, password=ssh_user.password)
    result = run(runner, spec, "id -un")
    assert result.stdout == f"{ssh_user.name}\n"


def test_wrong_key_is_auth_failed(runner: SSHRunner, sshd: SshdServer, ssh_user: TestUser,
                                  unauthorized_key: ClientKey, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    err = connect_error(runner, make_spec(sshd, ssh_user, unauthorized_key))
    assert err.error_type == "auth_failed"
    body = unauthorized_key.private_key.splitlines()[1]
    assert body not in err.message and body not in caplog.text


def test_wrong_password_is_auth_failed_and_not_leaked(
    runner: SSHRunner, sshd: SshdServer, ssh_user: TestUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "wrong-Password-" + secrets.token_hex(4)
    err = connect_error(runner, make_spec(sshd, ssh_user, password=secret))
    assert err.error_type == "auth_failed"
    assert secret not in str(err) and secret not in err.message
    assert secret not in caplog.text
    assert secret not in repr(make_spec(sshd, ssh_user, password=secret))


def test_wrong_password_not_masked_by_pooled_good_connection(
    runner: SSHRunner, sshd: SshdServer, ssh_user: TestUser
) -> None:
    # Same credential_version, different secret: must not reuse the authenticated transport.
    good = make_spec(sshd, ssh_user, password=ssh_user.password, credential_version="v1")
    assert run(runner, good, "true").error_type is None
    bad = make_spec(sshd, ssh_user, password="not-the-password", credential_version="v1")
    assert connect_error(runner, bad).error_type == "auth_failed"


@pytest.mark.parametrize("passphrase", ["Bad-Phrase-91c3", None])
def test_bad_or_missing_passphrase_is_auth_failed(
    runner: SSHRunner, sshd: SshdServer, ssh_user: TestUser, client_keys: dict[str, ClientKey],
    passphrase: str | None, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = client_keys["ed25519_passphrase"]
    spec = make_spec(sshd, ssh_user, private_key=key.private_key, passphrase=passphrase)
    err = connect_error(runner, spec)
    assert err.error_type == "auth_failed"
    for secret in (TEST_KEY_PASSPHRASE, "Bad-Phrase-91c3"):
        assert secret not in err.message and secret not in caplog.text


def test_garbage_key_is_auth_failed(runner: SSHRunner, sshd: SshdServer, ssh_user: TestUser) -> None:
    garbage = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot base64!\n-----END OPENSSH PRIVATE KEY-----\n"
    spec = make_spec(sshd, ssh_user, private_key=garbage)
    assert connect_error(runner, spec).error_type == "auth_failed"


# --------------------------------------------------------------------------- host keys


def test_trust_on_first_use_reports_host_key(runner: SSHRunner, sshd: SshdServer, spec: ConnectionSpec) -> None:
    assert spec.known_host_key is None
    with runner.open(spec) as session:
        assert session.host_key == sshd.host_key_line
        assert session.host_key.startswith("ssh-ed25519 AAAA")


def test_pinned_matching_host_key_connects(runner: SSHRunner, sshd: SshdServer, ssh_user: TestUser,
                                           client_keys: dict[str, ClientKey]) -> None:
    spec = make_spec(sshd, ssh_user, client_keys["ed25519"], known_host_key=sshd.host_key_line + " some-comment")
    assert run(runner, spec, "true").error_type is None


def test_changed_host_key_is_refused(runner: SSHRunner, rekeyable_sshd: SshdServer, ssh_user: TestUser,
                                     client_keys: dict[str, ClientKey], pool: SSHPool) -> None:
    key = client_keys["ed25519"]
    first = make_spec(rekeyable_sshd, ssh_user, key)
    with runner.open(first) as session:
        old_key = session.host_key
    assert old_key == rekeyable_sshd.host_key_line

    rekeyable_sshd.restart(new_host_key=True)  # same address and port, new identity
    new_key = rekeyable_sshd.host_key_line
    assert new_key != old_key

    pinned = make_spec(rekeyable_sshd, ssh_user, key, known_host_key=old_key)
    err = connect_error(runner, pinned)
    assert err.error_type == "host_key_mismatch"
    assert "SHA256:" in err.message

    pool.close_all()
    with runner.open(first) as session:  # trust on first use reports the new key
        assert session.host_key == new_key
    assert run(runner, make_spec(rekeyable_sshd, ssh_user, key, known_host_key=new_key), "true").error_type is None


# --------------------------------------------------------------------------- pool


def test_pool_reuses_authenticated_transport(runner: SSHRunner, pool: SSHPool, sshd: SshdServer,
                                             spec: ConnectionSpec) -> None:
    t0 = time.monotonic()
    first = runner.open(spec)
    first_open = time.monotonic() - t0
    transport = first.transport
    assert first.run("true").error_type is None
    first.close()

    t0 = time.monotonic()
    second = runner.open(dataclasses.replace(spec, known_host_key=first.host_key))  # as pinned after first use
    second_open = time.monotonic() - t0
    try:
        assert second.reused
        assert second.transport is transport
        assert second.host_key == sshd.host_key_line  # still reported for pooled sessions
        assert second.run("echo again").stdout == "again\n"
    finally:
        second.close()
    assert (pool.connects, pool.reuses) == (1, 1)
    logging.getLogger(__name__).info("first open %.1f ms, pooled open %.3f ms", first_open * 1e3, second_open * 1e3)


def test_pool_checkout_is_exclusive(runner: SSHRunner, pool: SSHPool, spec: ConnectionSpec) -> None:
    a = runner.open(spec)
    b = runner.open(spec)  # a is checked out: b needs its own transport
    try:
        assert a.transport is not b.transport
    finally:
        a.close()
        b.close()
    assert pool.connects == 2 and pool.idle_count() == 2


def test_pool_keys_separate_credentials_and_pins(runner: SSHRunner, pool: SSHPool, sshd: SshdServer,
                                                 spec: ConnectionSpec, unauthorized_key: ClientKey) -> None:
    run(runner, spec, "true")  # trust on first use
    run(runner, dataclasses.replace(spec, credential_version="v2"), "true")  # another credential
    assert pool.connects == 2 and pool.reuses == 0
    # the next branch names the key the first one pinned: it reuses that transport
    run(runner, dataclasses.replace(spec, known_host_key=sshd.host_key_line), "true")
    assert pool.connects == 2 and pool.reuses == 1
    # another pin never gets a transport verified against a different key
    other_pin = " ".join(unauthorized_key.public_line.split()[:2])
    error = connect_error(runner, dataclasses.replace(spec, known_host_key=other_pin))
    assert error.error_type == "host_key_mismatch"
    assert pool.reuses == 1


def test_pool_discards_dead_transport(runner: SSHRunner, pool: SSHPool, spec: ConnectionSpec) -> None:
    session = runner.open(spec)
    transport = session.transport
    session.close()
    assert transport is not None
    transport.close()
    again = runner.open(spec)
    try:
        assert not again.reused and again.transport is not transport
        assert again.run("echo ok").stdout == "ok\n"
    finally:
        again.close()
    assert pool.connects == 2


def test_session_reconnects_when_transport_died_before_run(runner: SSHRunner, pool: SSHPool,
                                                           spec: ConnectionSpec) -> None:
    with runner.open(spec) as session:
        assert session.transport is not None
        session.transport.close()
        result = session.run("echo recovered")
        assert result.stdout == "recovered\n"
    assert pool.connects == 2


def test_pool_idle_expiry(sshd: SshdServer, spec: ConnectionSpec) -> None:
    pool = SSHPool(idle_timeout=0.2)
    runner = SSHRunner(pool=pool)
    try:
        session = runner.open(spec)
        transport = session.transport
        session.close()
        assert pool.idle_count() == 1
        wait_until(lambda: pool.idle_count() == 0, timeout=5, message="idle transport expiry")
        assert transport is not None
        wait_until(lambda: not transport.is_active(), timeout=5, message="expired transport closed")
    finally:
        pool.close_all()


def test_close_all(runner: SSHRunner, pool: SSHPool, spec: ConnectionSpec) -> None:
    session = runner.open(spec)
    transport = session.transport
    session.close()
    pool.close_all()
    assert pool.idle_count() == 0
    assert transport is not None and not transport.is_active()
