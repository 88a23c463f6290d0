"""Job parameters reach commands as environment variables, verbatim, as data: over SSH (a real sshd,
no AcceptEnv: the values travel on stdin) and on the worker host. Hostile values execute nothing."""
from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sshd import ClientKey, SshdServer, TestUser
from tests.worker.test_ssh_runner import make_spec
from worker.runners.base import ConnectionSpec
from worker.runners.local import LocalRunner
from worker.runners.ssh import SSHPool, SSHRunner
from worker.runners.ssh_session import environment_preamble

pytestmark = pytest.mark.timeout(60)


def hostile_values(canary: Path) -> dict[str, str]:
    """Each would create `canary`-something if any shell parsed it as code."""
    c = str(canary)
    return {
        "OC_PARAM_QUOTE": f"'; touch {c}-quote; echo '",
        "OC_PARAM_DQUOTE": f'"; touch {c}-dquote; echo "',
        "OC_PARAM_SUBST": f"$(touch {c}-subst)",
        "OC_PARAM_TICKS": f"`touch {c}-ticks`",
        "OC_PARAM_NEWLINES": f"first\ntouch {c}-newline\n\n",
        "OC_PARAM_VARS": "$HOME ${PATH} $$ \\n \\\\ %s %b",
        "OC_PARAM_UNICODE": "héllo wörld ✓ 日本",
        "OC_PARAM_EMPTY": "",
        "OC_PARAM_SPACES": "  both ends  ",
        "OC_PARAM_LONG": "x" * 4000 + "'\"$`",
        "OC_PARAM_DASHES": "-n -e --",
    }


# prints every OC_PARAM_* variable as NAME=base64(value), one per line, so the test can compare bytes
DUMP = ("for name in $(env | sed -n 's/^\\(OC_PARAM_[A-Z0-9_]*\\)=.*/\\1/p' | sort -u); do "
        "eval \"value=\\${$name}\"; printf '%s=' \"$name\"; printf '%s' \"$value\" | base64 | tr -d '\\n'; echo; done")


def decoded(stdout: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in stdout.splitlines() if line.startswith("OC_PARAM_"))
    return {name: base64.b64decode(value).decode() for name, value in pairs}


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    base = Path("/tmp") / f"opsc-canary-{secrets.token_hex(4)}"
    yield base
    for leftover in Path("/tmp").glob(base.name + "*"):
        leftover.unlink()


def nothing_ran(canary: Path) -> None:
    assert not list(Path("/tmp").glob(canary.name + "*")), "a parameter value was executed"


def test_the_preamble_splices_names_only():
    preamble, data = environment_preamble({"OC_PARAM_A": "$(id)'\n", "OC_PARAM_B": "x"})
    assert "$(id)" not in preamble and "'\n" not in data.decode()
    assert data == base64.b64encode(b"$(id)'\n") + b"\n" + base64.b64encode(b"x") + b"\n"
    with pytest.raises(ValueError):
        environment_preamble({"A;id": "x"})


# ---------------------------------------------------------------- SSH

@pytest.fixture
def ssh(sshd: SshdServer, ssh_user: TestUser, client_keys: dict[str, ClientKey]) -> Iterator[tuple[SSHRunner,
                                                                                                   ConnectionSpec]]:
    pool = SSHPool()
    yield SSHRunner(pool=pool, kill_grace=2.0), make_spec(sshd, ssh_user, client_keys["ed25519"])
    pool.close_all()


def test_ssh_command_sees_the_values_verbatim_and_runs_none(ssh, canary):
    runner, spec = ssh
    values = hostile_values(canary)
    with runner.open(spec) as session:
        result = session.run(DUMP, env=values, timeout=20)
        assert result.exit_code == 0, (result.stderr, result.error_message)
        assert decoded(result.stdout) == values
        # the values were consumed from stdin: the command's own stdin is empty, like /dev/null
        empty = session.run("cat; echo end", env=values, timeout=20)
        assert empty.stdout == "end\n"
        # the same session without env sees none of them
        bare = session.run(DUMP, timeout=20)
        assert bare.exit_code == 0 and decoded(bare.stdout) == {}
    nothing_ran(canary)


def test_ssh_script_action_gets_the_values_and_its_script(ssh, canary):
    runner, spec = ssh
    values = hostile_values(canary)
    script = f"{DUMP}\necho script-ran\nread -r line || echo stdin-empty\n".encode()
    with runner.open(spec) as session:
        result = session.run("/bin/sh", stdin=script, env=values, timeout=20)
    assert result.exit_code == 0, (result.stderr, result.error_message)
    assert decoded(result.stdout) == values
    assert "script-ran\nstdin-empty\n" in result.stdout
    nothing_ran(canary)


# ---------------------------------------------------------------- local

def test_local_command_sees_the_values_verbatim_and_runs_none(canary):
    runner = LocalRunner(env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, run_as=None)
    values = hostile_values(canary)
    with runner.open() as session:
        result = session.run(DUMP, env=values, timeout=20)
        assert result.exit_code == 0, result.stderr
        assert decoded(result.stdout) == values
        script = session.run("/bin/sh", stdin=f"{DUMP}\necho script-ran\n".encode(), env=values, timeout=20)
        assert decoded(script.stdout) == values and "script-ran" in script.stdout
        assert decoded(session.run(DUMP, timeout=20).stdout) == {}
    nothing_ran(canary)


def test_local_parameters_survive_the_secret_scrub(canary):
    """worker/runtime.py drops the worker's own variables whose names look secret; a parameter named
    like one (OC_PARAM_DB_PASSWORD) is the job's own and reaches the command."""
    from worker.runtime import _command_env

    runner = LocalRunner(env=_command_env(), run_as=None)
    with runner.open() as session:
        result = session.run(DUMP, env={"OC_PARAM_DB_PASSWORD": "pw", "OC_PARAM_API_TOKEN": "tk"}, timeout=20)
    assert decoded(result.stdout) == {"OC_PARAM_DB_PASSWORD": "pw", "OC_PARAM_API_TOKEN": "tk"}
