"""Real OpenSSH sshd processes for tests (no mocks: the runner must survive a real server).

Usage::

    ensure_sshd_installed()
    user = ensure_test_user()
    with SshdServer(["127.0.0.2", "127.0.0.3"]) as server:
        key = generate_client_key("ed25519")
        server.authorize(key.public_line)
        ...  # connect to (address, server.port) as user.name

Every server gets its own temp dir, host key, config, port and log file and never touches the
system's sshd (no PID file, no shared config). See /work/shared/TESTING.md for the facts the
config choices rest on (locked accounts, MaxStartups, the 16 ListenAddress limit).
"""
from __future__ import annotations

import logging
import os
import pwd
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

logger = logging.getLogger(__name__)

SSHD_BIN = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
TEST_USER = "opsc-test"
TEST_PASSWORD = "opsc-Test-pw-4711"
TEST_KEY_PASSPHRASE = "correct horse battery staple"
TEST_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")  # distinct "hosts", all loopback
MAX_LISTEN_ADDRESSES = 16  # sshd: "Too many listen sockets" beyond this

T = TypeVar("T")


# --------------------------------------------------------------------------- generic helpers


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail loudly at the deadline.

    Tests synchronise on observable conditions, never on fixed sleeps.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(interval)


def find_processes(marker: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``marker``.

    Zombies have an empty cmdline, so a killed but unreaped process does not count: on some
    machines PID 1 never reaps orphans.
    """
    me = os.getpid()
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def _children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (sshd's per-connection processes)."""
    children: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised comm, which may contain spaces.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def _run(cmd: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def ensure_sshd_installed() -> str:
    """Install openssh-server when missing (fresh CI machines); returns the sshd path."""
    if os.path.exists(SSHD_BIN) and shutil.which(SSH_KEYGEN):
        return SSHD_BIN
    logger.info("openssh-server missing; installing it with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update"], env=env)
    _run(["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"], env=env)
    if not os.path.exists(SSHD_BIN):
        raise RuntimeError(f"{SSHD_BIN} still missing after installing openssh-server")
    return SSHD_BIN


def free_port(addresses: Sequence[str] = ("127.0.0.1",)) -> int:
    """A TCP port currently bindable on every address (best effort; callers retry on clashes)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
        try:
            for address in addresses:
                with socket.socket() as probe:
                    probe.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port found")


# --------------------------------------------------------------------------- users and keys


@dataclass(frozen=True)
class TestUser:
    """The unix account tests log in as."""

    __test__ = False  # not a pytest test class

    name: str
    password: str
    home: str
    uid: int


def _password_hash(password: str) -> str:
    # A fixed salt keeps the hash stable so repeated runs need no usermod.
    out = _run(["openssl", "passwd", "-6", "-salt", "opsctestsalt", "-stdin"], input=password)
    return out.stdout.strip()


def _shadow_hash(name: str) -> str | None:
    try:
        with open("/etc/shadow") as f:
            for line in f:
                parts = line.split(":")
                if parts[0] == name:
                    return parts[1]
    except OSError:
        return None
    return None


def ensure_test_user(name: str = TEST_USER, password: str = TEST_PASSWORD) -> TestUser:
    """Create the login user if needed and give it a known password.

    ``useradd`` leaves the account locked ('!'), which with ``UsePAM no`` makes sshd reject
    even public-key logins; a real password hash unlocks both auth methods.
    """
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0:
            raise RuntimeError(f"user {name!r} is missing and creating it needs root") from None
        result = subprocess.run(
            ["useradd", "-m", "-s", "/bin/bash", name], capture_output=True, text=True
        )
        if result.returncode not in (0, 9):  # 9: created concurrently by another run
            raise RuntimeError(f"useradd {name} failed: {result.stderr.strip()}") from None
        pw = pwd.getpwnam(name)
    if shutil.which("openssl"):
        wanted = _password_hash(password)
        if _shadow_hash(name) != wanted:
            _run(["usermod", "-p", wanted, name])
    else:
        _run(["chpasswd"], input=f"{name}:{password}\n")
    return TestUser(name=name, password=password, home=pw.pw_dir, uid=pw.pw_uid)


@dataclass(frozen=True)
class ClientKey:
    """A client keypair: what a credential stores (private text) and what the host trusts."""

    key_type: str  # ed25519 | rsa | ecdsa
    private_key: str
    public_line: str  # "ssh-ed25519 AAAA... comment"
    passphrase: str | None = None


_KEYGEN_BITS = {"ed25519": None, "rsa": "2048", "ecdsa": "256"}


def generate_client_key(
    key_type: str = "ed25519",
    passphrase: str | None = None,
    *,
    pem: bool = False,
    comment: str = "opsc-test",
) -> ClientKey:
    """Generate a keypair with ssh-keygen (OpenSSH format, or legacy PEM when ``pem``)."""
    if key_type not in _KEYGEN_BITS:
        raise ValueError(f"unsupported key type {key_type!r}")
    with tempfile.TemporaryDirectory(prefix="opsc-key-") as tmp:
        path = os.path.join(tmp, "id")
        cmd = [SSH_KEYGEN, "-q", "-t", key_type, "-N", passphrase or "", "-C", comment, "-f", path]
        bits = _KEYGEN_BITS[key_type]
        if bits:
            cmd += ["-b", bits]
        if pem:
            cmd += ["-m", "PEM"]
        _run(cmd)
        private = Path(path).read_text()
        public = Path(path + ".pub").read_text().strip()
    return ClientKey(key_type=key_type, private_key=private, public_line=public, passphrase=passphrase)


# --------------------------------------------------------------------------- sshd


class SshdServer:
    """One private sshd listening on ``addresses`` (loopback aliases = distinct hosts) and one port."""

    def __init__(
        self,
        addresses: Sequence[str] = ("127.0.0.2",),
        port: int | None = None,
        *,
        users: Iterable[str] = (TEST_USER,),
        extra_config: str = "",
        start_timeout: float = 10.0,
    ) -> None:
        if not addresses:
            raise ValueError("at least one listen address is required")
        if len(addresses) > MAX_LISTEN_ADDRESSES:
            raise ValueError(f"one sshd accepts at most {MAX_LISTEN_ADDRESSES} ListenAddress lines")
        ensure_sshd_installed()
        self.addresses: tuple[str, ...] = tuple(addresses)
        self._fixed_port = port
        self.port: int = port or 0
        self.users = tuple(users)
        self.extra_config = extra_config
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="opsc-sshd-"))
        # The user's auth is checked with the user's uid: the dir and key file must be readable.
        self.workdir.chmod(0o755)
        self.host_key_path = self.workdir / "ssh_host_ed25519_key"
        self.config_path = self.workdir / "sshd_config"
        self.authorized_keys_path = self.workdir / "authorized_keys"
        self.log_path = self.workdir / "sshd.log"
        self.authorized_keys_path.touch()
        self.authorized_keys_path.chmod(0o644)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._generate_host_key()

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> SshdServer:
        try:
            return self.start()
        except BaseException:
            self.close()  # no temp dir left behind when startup fails
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> SshdServer:
        """Start sshd and return once every address answers with an SSH banner."""
        ensure_sshd_installed()
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation dir, required
        attempts = 1 if self._fixed_port or self.port else 5
        last_error: Exception | None = None
        for _ in range(attempts):
            if not self._fixed_port and not self.port:
                self.port = free_port(self.addresses)
            try:
                self._spawn()
                return self
            except _PortInUse as exc:  # lost a race for an auto-picked port: pick another
                last_error = exc
                self.port = 0
        raise RuntimeError(f"sshd could not start: {last_error}")

    def _spawn(self) -> None:
        self._write_config()
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        try:
            self._proc = subprocess.Popen(
                [SSHD_BIN, "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        pending = list(self.addresses)
        while pending:
            if self._proc.poll() is not None:
                text = self.log_text()
                self._proc = None
                if "Address already in use" in text:
                    raise _PortInUse(text[-500:])
                raise RuntimeError(f"sshd exited at startup:\n{text[-2000:]}")
            if _answers_ssh_banner(pending[0], self.port, deadline):
                pending.pop(0)
                continue
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"sshd not answering on {pending[0]}:{self.port}:\n{self.log_text()[-2000:]}")
            time.sleep(0.005)
        # sshd keeps running when only some addresses fail to bind; another process may then be
        # the one that answered on that address.
        if b"Address already in use" in self.log_path.read_bytes()[log_start:]:
            self.stop()
            raise _PortInUse(f"port {self.port} taken on some address")
        logger.debug("sshd pid %s ready on %s port %s", self._proc.pid, self.addresses, self.port)

    def stop(self, drop_connections: bool = True) -> None:
        """Stop the listener; by default also end its open connections (like a host going down).

        OpenSSH leaves established sessions running when the listener dies, so connections are
        dropped explicitly unless ``drop_connections`` is False.
        """
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        children = _children_of(proc.pid) if drop_connections else []
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def restart(self, new_host_key: bool = True) -> None:
        """Restart on the same addresses and port; ``new_host_key`` simulates a rebuilt host."""
        self.stop()
        if new_host_key:
            self._generate_host_key()
        fixed, self._fixed_port = self._fixed_port, self.port  # keep the port
        try:
            self.start()
        finally:
            self._fixed_port = fixed

    def close(self) -> None:
        """Stop and remove the temp dir."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- keys and config -------------------------------------------------------------------

    def _generate_host_key(self) -> None:
        for p in (self.host_key_path, Path(str(self.host_key_path) + ".pub")):
            p.unlink(missing_ok=True)
        _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(self.host_key_path)])

    @property
    def host_key_line(self) -> str:
        """The host key as a client pins it: "ssh-ed25519 AAAA..." (no comment)."""
        parts = Path(str(self.host_key_path) + ".pub").read_text().split()
        return f"{parts[0]} {parts[1]}"

    def authorize(self, public_line: str) -> None:
        """Allow a client public key to log in (takes effect for the next connection)."""
        with self._lock, open(self.authorized_keys_path, "a") as f:
            f.write(public_line.strip() + "\n")

    def new_client_key(self, key_type: str = "ed25519", passphrase: str | None = None, *,
                       pem: bool = False) -> ClientKey:
        """Generate a client keypair and authorize it on this server."""
        key = generate_client_key(key_type, passphrase, pem=pem)
        self.authorize(key.public_line)
        return key

    def _write_config(self) -> None:
        listen = "\n".join(f"ListenAddress {a}:{self.port}" for a in self.addresses)
        config = f"""\
Port {self.port}
{listen}
HostKey {self.host_key_path}
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers {" ".join(self.users)}
AuthorizedKeysFile {self.authorized_keys_path}
MaxStartups 500:30:1000
PerSourceMaxStartups none
MaxSessions 1000
MaxAuthTries 20
LoginGraceTime 30
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
Subsystem sftp internal-sftp
LogLevel INFO
{self.extra_config}
"""
        self.config_path.write_text(config)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def connection_pids(self) -> list[int]:
        """PIDs of the per-connection sshd processes currently forked by this listener."""
        return _children_of(self._proc.pid) if self._proc else []


class _PortInUse(RuntimeError):
    pass


def _answers_ssh_banner(address: str, port: int, deadline: float) -> bool:
    """True once a TCP connect succeeds and the peer sends an ``SSH-`` banner."""
    remaining = max(0.05, deadline - time.monotonic())
    try:
        with socket.create_connection((address, port), timeout=min(remaining, 2.0)) as s:
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


# --------------------------------------------------------------------------- hung host


class HungListener:
    """A TCP listener that accepts connections and never says a word (a wedged host).

    An SSH client connects fine, then waits for a banner that never comes: exactly the case a
    deliberate banner timeout must cut short.
    """

    def __init__(self, address: str = "127.0.0.2", port: int | None = None) -> None:
        self.address = address
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((address, port or 0))
        self._sock.listen(128)
        self._sock.setblocking(False)
        self.port: int = self._sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name=f"hung-{address}:{self.port}", daemon=True)
        self._thread.start()

    def __enter__(self) -> HungListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in sel.select():
                    if key.fileobj == self._wake_r:
                        return
                    try:
                        conn, _ = self._sock.accept()
                    except BlockingIOError:
                        continue
                    self._conns.append(conn)  # hold it open, silently
                    self.accepted += 1
        finally:
            sel.close()

    def close(self) -> None:
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        self._sock.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
