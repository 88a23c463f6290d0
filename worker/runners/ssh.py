"""Run commands on remote targets over SSH (paramiko), with pooled, pinned connections.

Design points (each one exists because the naive version fails in production):

* Host keys are never auto-added blindly: with no pinned key the presented key is accepted and
  reported (trust on first use, the caller pins it); with a pinned key any other key is refused.
* Timeouts are explicit at every phase (TCP connect, banner, key exchange, auth) so a wedged host
  costs seconds, not paramiko's 15 s / 30 s defaults.
* Every command is wrapped so the remote shell first prints its PID on a marker line. sshd runs a
  non-pty command's shell as a session (and process group) leader, so ``kill -- -PID`` through a
  second channel reaches the whole process tree on timeout or cancel; merely closing the
  channel would leave ``sleep 3600`` running on the target.
* Output is read from both streams in one loop (select on the channel) so neither stream can
  fill its window and stall the other, and it is capped (head + tail) per stream.
* Open, authenticated transports go back to an ``SSHPool`` so the next branch on the same target
  in this worker process skips TCP, key exchange and auth (the dominant cost of a short action).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import logging
import os
import secrets
import selectors
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable

import paramiko
from cryptography.hazmat.primitives import serialization
from paramiko.ssh_exception import (
    AuthenticationException,
    BadAuthenticationType,
    IncompatiblePeer,
    PasswordRequiredException,
    SSHException,
)

from common.hostkeys import fingerprint

from .base import ConnectError, ConnectionSpec, StepRecorder, StepResult
from .output import DEFAULT_OUTPUT_CAP

logger = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_KILL_GRACE = 2.0
_CANCEL_POLL = 0.02  # a threading.Event cannot be selected on: how often to look at it
_LIVENESS_POLL = 1.0  # without timeout/cancel, how often to re-check the transport
_READ_CHUNK = 64 * 1024
_MARKER_SEARCH_LIMIT = 64 * 1024  # login noise tolerated before the PID marker
_MARKER_WAIT = 2.0  # on kill, how long to wait for a PID marker not yet received
_SIGNAL_TIMEOUT = 5.0



# --------------------------------------------------------------------------- keys


def host_key_line(key: paramiko.PKey) -> str:
    """The "type base64" form used for pinning (same as a known_hosts entry without the host)."""
    return f"{key.get_name()} {key.get_base64()}"


def _normalize_key_line(line: str) -> tuple[str, str]:
    parts = line.split()
    if len(parts) < 2:
        return (line.strip(), "")
    return (parts[0], parts[1])


def _host_key_algorithms(pinned_type: str) -> list[str]:
    """Algorithms to offer so the server presents the pinned key (and not another of its keys)."""
    if pinned_type == "ssh-rsa":
        return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    return [pinned_type]


_KEY_CLASSES: dict[str, type[paramiko.PKey]] = {
    "ssh-ed25519": paramiko.Ed25519Key,
    "ssh-rsa": paramiko.RSAKey,
    "ecdsa-sha2-nistp256": paramiko.ECDSAKey,
    "ecdsa-sha2-nistp384": paramiko.ECDSAKey,
    "ecdsa-sha2-nistp521": paramiko.ECDSAKey,
}


def _read_ssh_string(data: bytes, pos: int) -> tuple[bytes, int]:
    length = int.from_bytes(data[pos : pos + 4], "big")
    if pos + 4 + length > len(data):
        raise ValueError("truncated key data")
    return data[pos + 4 : pos + 4 + length], pos + 4 + length


def _openssh_key_type(text: str) -> str:
    """Key type of an OpenSSH-format private key, read from its unencrypted public part
    (so detection costs no passphrase KDF run)."""
    body = "".join(
        line.strip() for line in text.strip().splitlines() if line.strip() and not line.startswith("-----")
    )
    data = base64.b64decode(body)
    magic = b"openssh-key-v1\0"
    if not data.startswith(magic):
        raise ValueError("not an OpenSSH private key")
    pos = len(magic)
    for _ in range(3):  # cipher name, kdf name, kdf options
        _, pos = _read_ssh_string(data, pos)
    pos += 4  # number of keys
    public_blob, _ = _read_ssh_string(data, pos)
    key_type, _ = _read_ssh_string(public_blob, 0)
    return key_type.decode("ascii", "replace")


def load_private_key(text: str, passphrase: str | None = None) -> paramiko.PKey:
    """Parse private key text of any supported type (ed25519, RSA, ECDSA), detected from the text.

    Raises ConnectError("auth_failed") with a message that never contains key material or the
    passphrase.
    """
    text = text.strip() + "\n"
    first = next((line.strip() for line in text.splitlines() if line.startswith("-----BEGIN")), "")
    try:
        if "OPENSSH PRIVATE KEY" in first:
            key_type = _openssh_key_type(text)
            key_class = _KEY_CLASSES.get(key_type)
            if key_class is None:
                raise ConnectError("auth_failed", f"unsupported private key type {key_type!r}")
            return key_class.from_private_key(io.StringIO(text), password=passphrase)
        if "RSA PRIVATE KEY" in first:
            return paramiko.RSAKey.from_private_key(io.StringIO(text), password=passphrase)
        if "EC PRIVATE KEY" in first:
            return paramiko.ECDSAKey.from_private_key(io.StringIO(text), password=passphrase)
        if "PRIVATE KEY" in first:  # PKCS#8: convert to OpenSSH format, then load as above
            obj = serialization.load_pem_private_key(
                text.encode(), password=passphrase.encode() if passphrase else None
            )
            converted = obj.private_bytes(  # type: ignore[union-attr]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ).decode()
            return load_private_key(converted, None)
    except ConnectError:
        raise
    except PasswordRequiredException:
        raise ConnectError("auth_failed", "private key is encrypted and no passphrase was given") from None
    except (SSHException, ValueError, TypeError, IndexError, UnicodeError) as exc:
        logger.debug("private key rejected: %s", type(exc).__name__)
        raise ConnectError(
            "auth_failed", "private key could not be loaded (wrong passphrase or malformed key)"
        ) from None
    raise ConnectError("auth_failed", "private key text is not in a recognised format")


# --------------------------------------------------------------------------- pool


PoolKey = tuple[str, int, str, str, str, str]

# Per-process random key: the pool key can tell credentials apart without holding them.
_SECRET_KEY = secrets.token_bytes(32)


def _secret_digest(spec: ConnectionSpec) -> str:
    """Keyed digest of the secrets, so a transport authenticated with credential A is never
    reused for a spec carrying credential B even when the caller forgot credential_version."""
    mac = hmac.new(_SECRET_KEY, digestmod=hashlib.sha256)
    for part in (spec.password, spec.private_key, spec.passphrase):
        mac.update(b"\x01" + part.encode() if part is not None else b"\x00")
        mac.update(b"\x1f")
    return mac.hexdigest()


@dataclass(eq=False)
class PooledConnection:
    """An authenticated transport plus what we learned while opening it."""

    transport: paramiko.Transport
    host_key: str
    created_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    uses: int = 0

    @property
    def active(self) -> bool:
        return self.transport.is_active()

    def close(self) -> None:
        try:
            self.transport.close()
        except Exception:  # closing a broken transport must never fail the caller
            logger.debug("error closing transport", exc_info=True)


class SSHPool:
    """Idle authenticated transports, keyed by target + identity + credential + pinned key.

    Checkout is exclusive (one session per transport at a time) which keeps well under the
    target's MaxSessions. Idle transports expire after ``idle_timeout`` seconds (a background
    reaper runs only while something is idle); dead transports are discarded on checkout.
    """

    def __init__(self, idle_timeout: float = DEFAULT_IDLE_TIMEOUT, max_idle_per_key: int = 8) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle_per_key = max_idle_per_key
        self._init_state()

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._idle: dict[PoolKey, list[PooledConnection]] = {}
        self._reaper: threading.Thread | None = None
        self.connects = 0  # transports opened through this pool
        self.reuses = 0  # checkouts served by an idle transport

    def _check_fork(self) -> None:
        # After a fork (Celery prefork) the parent's transports have no thread here and share the
        # parent's sockets: forget them (do not close: that would disturb the parent).
        if os.getpid() != self._pid:
            self._init_state()

    @staticmethod
    def key_for(spec: ConnectionSpec) -> PoolKey:
        return (
            spec.host,
            spec.port,
            spec.username,
            spec.credential_version,
            spec.known_host_key or "",
            _secret_digest(spec),
        )

    def acquire(self, key: PoolKey) -> PooledConnection | None:
        """An idle, still active transport for ``key`` (most recently used first), or None."""
        self._check_fork()
        dead: list[PooledConnection] = []
        found: PooledConnection | None = None
        with self._cond:
            conns = self._idle.get(key, [])
            now = time.monotonic()
            while conns:
                conn = conns.pop()
                if conn.active and now - conn.last_used < self.idle_timeout:
                    found = conn
                    break
                dead.append(conn)
            if not conns:
                self._idle.pop(key, None)
            if found is not None:
                self.reuses += 1
                found.uses += 1
        for conn in dead:
            conn.close()
        return found

    def note_connect(self, conn: PooledConnection) -> None:
        with self._cond:
            self.connects += 1
            conn.uses += 1

    def release(self, key: PoolKey, conn: PooledConnection) -> None:
        """Return a transport for reuse; closes it instead if it is dead or the pool is full."""
        self._check_fork()
        if not conn.active:
            conn.close()
            return
        conn.last_used = time.monotonic()
        with self._cond:
            conns = self._idle.setdefault(key, [])
            if len(conns) >= self.max_idle_per_key:
                surplus: PooledConnection | None = conn
            else:
                conns.append(conn)
                surplus = None
                if self._reaper is None:
                    self._reaper = threading.Thread(target=self._reap, name="ssh-pool-reaper", daemon=True)
                    self._reaper.start()
                self._cond.notify_all()
            if not conns:
                self._idle.pop(key, None)
        if surplus is not None:
            surplus.close()

    def discard(self, conn: PooledConnection) -> None:
        conn.close()

    def _reap(self) -> None:
        """Close transports idle longer than idle_timeout; exits when nothing is idle."""
        while True:
            expired: list[PooledConnection] = []
            with self._cond:
                if not self._idle:
                    self._reaper = None
                    return
                now = time.monotonic()
                next_expiry = None
                for key in list(self._idle):
                    keep = []
                    for conn in self._idle[key]:
                        expires = conn.last_used + self.idle_timeout
                        if expires <= now or not conn.active:
                            expired.append(conn)
                        else:
                            keep.append(conn)
                            next_expiry = expires if next_expiry is None else min(next_expiry, expires)
                    if keep:
                        self._idle[key] = keep
                    else:
                        del self._idle[key]
                if not expired and next_expiry is not None:
                    self._cond.wait(timeout=max(0.01, next_expiry - now))
            for conn in expired:
                logger.debug("closing idle SSH transport")
                conn.close()

    def idle_count(self, key: PoolKey | None = None) -> int:
        with self._cond:
            if key is not None:
                return len(self._idle.get(key, []))
            return sum(len(v) for v in self._idle.values())

    def close_all(self) -> None:
        """Close every idle transport (worker shutdown); the pool stays usable afterwards."""
        with self._cond:
            conns = [c for v in self._idle.values() for c in v]
            self._idle.clear()
            self._cond.notify_all()
        for conn in conns:
            conn.close()


_shared_pool: SSHPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> SSHPool:
    """The worker-process-wide pool runners use by default (reuse across tasks)."""
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None:
            _shared_pool = SSHPool()
        return _shared_pool


# --------------------------------------------------------------------------- run helpers


class _PidMarker:
    """Strips the ``<marker><pid>\\n`` line from the start of stdout and remembers the PID.

    Login noise (e.g. a chatty .bashrc) may precede it: that is passed through as output.
    """

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.pid: int | None = None
        self.done = False
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return data
        self._buf += data
        start = self._buf.find(self.marker)
        if start >= 0:
            end = self._buf.find(b"\n", start)
            if end >= 0:
                digits = bytes(self._buf[start + len(self.marker) : end]).strip()
                if digits.isdigit() and int(digits) > 1:
                    self.pid = int(digits)
                out = bytes(self._buf[:start] + self._buf[end + 1 :])
                self.done = True
                self._buf.clear()
                return out
        if len(self._buf) > _MARKER_SEARCH_LIMIT:
            return self.flush()
        return b""

    def flush(self) -> bytes:
        self.done = True
        out = bytes(self._buf)
        self._buf.clear()
        return out


def _write_stdin(chan: paramiko.Channel, data: bytes) -> None:
    """Feed stdin from its own thread: a blocked send (full window) never stalls reading."""
    try:
        chan.sendall(data)
        chan.shutdown_write()
    except (OSError, SSHException, EOFError):
        # The command exited or closed stdin early (e.g. `head -c1`): not an error by itself.
        logger.debug("stdin not fully written: remote side closed it")


class KeyCache:
    """Parsed private keys by secret digest, single-flight. Parsing a passphrase-protected OpenSSH
    key runs bcrypt: ~120 ms of CPU each time on this machine, so a cold fan-out to 100 targets
    sharing one credential would pay it 100 times, all at once. A key that fails to parse is not
    kept (the next attempt reports the same error)."""

    def __init__(self, size: int = 128) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, paramiko.PKey] = OrderedDict()
        self._gates: dict[str, threading.Lock] = {}

    def get(self, digest: str, load: Callable[[], paramiko.PKey]) -> paramiko.PKey:
        with self._lock:
            if digest in self._keys:
                self._keys.move_to_end(digest)
                return self._keys[digest]
            gate = self._gates.setdefault(digest, threading.Lock())
        with gate:  # the first caller parses; the others wait for its result
            with self._lock:
                if digest in self._keys:
                    return self._keys[digest]
            try:
                key = load()
            finally:
                with self._lock:
                    self._gates.pop(digest, None)
            with self._lock:
                self._keys[digest] = key
                while len(self._keys) > self._size:
                    self._keys.popitem(last=False)
            return key

    def __len__(self) -> int:
        return len(self._keys)


# --------------------------------------------------------------------------- session


class SSHSession:
    """One checked-out transport to one target; ``run`` may be called repeatedly."""

    def __init__(self, runner: "SSHRunner", spec: ConnectionSpec, key: PoolKey, conn: PooledConnection, reused: bool):
        self._runner = runner
        self._spec = spec
        self._key = key
        self._conn: PooledConnection | None = conn
        self.reused = reused  # True when the transport came from the pool
        self.host_key: str | None = conn.host_key

    @property
    def transport(self) -> paramiko.Transport | None:
        return self._conn.transport if self._conn else None

    def __enter__(self) -> "SSHSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Hand the transport back to the pool (or close it if it died)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._runner.pool.release(self._key, conn)

    def _open_channel(self) -> paramiko.Channel:
        """A fresh exec channel; reconnects once if a pooled transport died while idle
        (safe: nothing has run yet)."""
        if self._conn is None:
            raise ConnectError("unreachable", "session is closed")
        try:
            return self._conn.transport.open_session(timeout=self._runner.channel_open_timeout)
        except (SSHException, EOFError, OSError) as exc:
            logger.info("SSH transport to %s:%s unusable (%s); reconnecting", self._spec.host, self._spec.port, type(exc).__name__)
        self._runner.pool.discard(self._conn)
        self._conn = None
        conn = self._runner._connect(self._spec)
        self._runner.pool.note_connect(conn)
        self._conn = conn
        self.reused = False
        self.host_key = conn.host_key
        try:
            return conn.transport.open_session(timeout=self._runner.channel_open_timeout)
        except (SSHException, EOFError, OSError) as exc:
            raise ConnectError("unreachable", f"cannot open a channel on {self._spec.host}:{self._spec.port}: {exc}") from exc

    def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> StepResult:
        t0 = time.monotonic()
        deadline = t0 + timeout if timeout is not None else None
        recorder = StepRecorder(self._runner.output_cap)
        out, err, result = recorder.out, recorder.err, recorder.result

        if cancel is not None and cancel.is_set():
            return result(None, "cancelled", "cancelled before the command started")
        try:
            chan = self._open_channel()
        except ConnectError as exc:
            return result(None, exc.error_type, exc.message)

        token = secrets.token_hex(8)
        marker = f"__OPSC_{token}_PID="
        parser = _PidMarker(marker.encode())
        # The first line runs before the rest is even parsed, so the PID arrives first whatever
        # the command contains; `$$` is the shell sshd made a session/group leader.
        wrapped = f"echo {marker}$$\n{command}"
        writer: threading.Thread | None = None
        try:
            chan.exec_command(wrapped)
            if stdin:
                writer = threading.Thread(target=_write_stdin, args=(chan, stdin), name="ssh-stdin", daemon=True)
                writer.start()
            else:
                chan.shutdown_write()  # like </dev/null: `cat` must not wait forever
        except (SSHException, EOFError, OSError) as exc:
            chan.close()
            return result(None, "command_failed", f"target refused to start the command: {exc}")

        def drain() -> None:
            while chan.recv_ready():
                out.feed(parser.feed(chan.recv(_READ_CHUNK)))
            while chan.recv_stderr_ready():
                err.feed(chan.recv_stderr(_READ_CHUNK))

        def finished() -> bool:
            if chan.recv_ready() or chan.recv_stderr_ready():
                return False
            return chan.closed or (chan.eof_received and chan.status_event.is_set())

        sel = selectors.DefaultSelector()
        sel.register(chan, selectors.EVENT_READ)  # channel fileno: readable on data/EOF/close
        reason: str | None = None
        try:
            while True:
                drain()
                if finished():
                    break
                now = time.monotonic()
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                    break
                if deadline is not None and now >= deadline:
                    reason = "timeout"
                    break
                if not self._conn or not self._conn.transport.is_active():
                    break
                wait = _LIVENESS_POLL if deadline is None else min(_LIVENESS_POLL, deadline - now)
                if cancel is not None:
                    wait = min(wait, _CANCEL_POLL)
                if chan.eof_received:
                    # After EOF the channel's pipe stays readable: wait on the exit status instead.
                    chan.status_event.wait(wait)
                else:
                    sel.select(wait)

            if reason is not None:
                killed = self._terminate(chan, parser, drain, finished)
                out.feed(parser.flush())
                what = (
                    f"command did not finish within {timeout:g}s"
                    if reason == "timeout"
                    else "command cancelled while running"
                )
                return result(None, reason, f"{what}; {killed}")

            out.feed(parser.flush())
            code = chan.exit_status  # paramiko keeps -1 until an exit-status message arrives
            if code == 0:
                return result(0, None, None)
            if code > 0:
                return result(code, "command_failed", f"command exited with status {code}")
            if self._conn is None or not self._conn.transport.is_active():
                return result(None, "command_failed", "connection to the target was lost while the command ran")
            return result(None, "command_failed", "command ended without an exit status (killed by a signal?)")
        finally:
            sel.close()
            chan.close()
            if writer is not None:
                writer.join(timeout=5)

    # -- killing -----------------------------------------------------------------------------

    def _terminate(
        self,
        chan: paramiko.Channel,
        parser: _PidMarker,
        drain: Callable[[], None],
        finished: Callable[[], bool],
    ) -> str:
        """TERM the remote process group, wait up to the grace period for the command to end,
        then KILL the group (catches members that ignore TERM or closed their output)."""
        marker_deadline = time.monotonic() + _MARKER_WAIT
        while parser.pid is None and not parser.done and not finished() and time.monotonic() < marker_deadline:
            drain()
            _wait_channel(chan, 0.05)
        pid = parser.pid
        if pid is None:
            logger.warning("no PID marker from %s; closing the channel only", self._spec.host)
            return "remote PID unknown, channel closed (remote processes may survive)"
        self._signal(pid, "TERM")
        grace_deadline = time.monotonic() + self._runner.kill_grace
        while not finished() and time.monotonic() < grace_deadline:
            drain()
            if finished():
                break
            _wait_channel(chan, min(0.05, max(0.0, grace_deadline - time.monotonic())))
        self._signal(pid, "KILL")
        drain()
        return f"remote process group {pid} terminated"

    def _signal(self, pid: int, sig: str) -> None:
        """Signal the remote process group over a second exec channel on the same transport."""
        if self._conn is None or not self._conn.transport.is_active():
            logger.warning("cannot signal remote process group %s on %s: connection lost", pid, self._spec.host)
            return
        try:
            ch = self._conn.transport.open_session(timeout=_SIGNAL_TIMEOUT)
            try:
                ch.exec_command(f"kill -s {sig} -- -{pid} 2>/dev/null; exit 0")
                ch.shutdown_write()
                if not ch.status_event.wait(_SIGNAL_TIMEOUT):
                    logger.warning("kill -%s of remote group %s on %s unconfirmed", sig, pid, self._spec.host)
            finally:
                ch.close()
        except (SSHException, EOFError, OSError) as exc:
            logger.warning("could not signal remote process group %s on %s: %s", pid, self._spec.host, exc)


def _wait_channel(chan: paramiko.Channel, timeout: float) -> None:
    """Block until the channel has news (data, EOF, exit status, close) or ``timeout`` passes."""
    if chan.eof_received:
        # After EOF the channel's pipe stays readable forever: wait on the exit status instead.
        chan.status_event.wait(timeout)
        return
    with selectors.DefaultSelector() as sel:
        sel.register(chan, selectors.EVENT_READ)
        sel.select(timeout)


# --------------------------------------------------------------------------- runner


class SSHRunner:
    """Runner over SSH. Phase timeouts derive from ``spec.connect_timeout`` unless given here."""

    def __init__(
        self,
        *,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        pool: SSHPool | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
        banner_timeout: float | None = None,
        auth_timeout: float | None = None,
        channel_open_timeout: float = 10.0,
    ) -> None:
        self.output_cap = output_cap
        self.pool = pool if pool is not None else shared_pool()
        self.kill_grace = kill_grace
        self.banner_timeout = banner_timeout
        self.auth_timeout = auth_timeout
        self.channel_open_timeout = channel_open_timeout
        self.keys = KeyCache()

    def timeouts(self, spec: ConnectionSpec) -> tuple[float, float, float]:
        """(banner, key exchange, auth) timeouts for ``spec``.

        A host that accepted TCP should greet and finish key exchange within the connect budget;
        auth gets twice that because targets may delay answers (PAM fail delay, LDAP).
        """
        banner = self.banner_timeout if self.banner_timeout is not None else spec.connect_timeout
        handshake = spec.connect_timeout
        auth = self.auth_timeout if self.auth_timeout is not None else 2 * spec.connect_timeout
        return banner, handshake, auth

    def open(self, spec: ConnectionSpec) -> SSHSession:
        """Check out a pooled transport for ``spec`` or connect; raises ConnectError."""
        key = self.pool.key_for(spec)
        conn = self.pool.acquire(key)
        if conn is not None:
            logger.debug("reusing SSH transport to %s:%s", spec.host, spec.port)
            return SSHSession(self, spec, key, conn, reused=True)
        conn = self._connect(spec)
        self.pool.note_connect(conn)
        if not spec.known_host_key:
            # trusted on first use: the caller pins this key, so the next branch's spec names it;
            # pool the transport under that pinned key, or the next branch could never reuse it
            key = self.pool.key_for(replace(spec, known_host_key=conn.host_key))
        return SSHSession(self, spec, key, conn, reused=False)

    # -- connecting ----------------------------------------------------------------------------

    def _connect(self, spec: ConnectionSpec) -> PooledConnection:
        where = f"{spec.host}:{spec.port}"
        banner_timeout, handshake_timeout, auth_timeout = self.timeouts(spec)
        try:
            sock = socket.create_connection((spec.host, spec.port), timeout=spec.connect_timeout)
        except socket.gaierror as exc:
            raise ConnectError("unreachable", f"cannot resolve host {spec.host!r}: {exc.strerror}") from exc
        except ConnectionRefusedError as exc:
            raise ConnectError("unreachable", f"connection refused by {where}") from exc
        except (socket.timeout, TimeoutError) as exc:
            raise ConnectError("unreachable", f"timed out after {spec.connect_timeout:g}s connecting to {where}") from exc
        except OSError as exc:
            raise ConnectError("unreachable", f"cannot connect to {where}: {exc.strerror or exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

        transport = paramiko.Transport(sock)
        transport.banner_timeout = banner_timeout
        transport.handshake_timeout = handshake_timeout
        transport.auth_timeout = auth_timeout
        pinned = _normalize_key_line(spec.known_host_key) if spec.known_host_key else None
        try:
            if pinned is not None:
                opts = transport.get_security_options()
                wanted = [a for a in _host_key_algorithms(pinned[0]) if a in opts.key_types]
                if wanted:
                    opts.key_types = wanted
            host_key = self._handshake(transport, spec, pinned, banner_timeout + handshake_timeout)
            self._authenticate(transport, spec)
        except BaseException:
            transport.close()
            raise
        logger.debug("connected to %s as %s", where, spec.username)
        return PooledConnection(transport=transport, host_key=host_key)

    def _handshake(
        self,
        transport: paramiko.Transport,
        spec: ConnectionSpec,
        pinned: tuple[str, str] | None,
        timeout: float,
    ) -> str:
        """Banner + key exchange, then the host key check. Returns the presented key line."""
        where = f"{spec.host}:{spec.port}"
        done = threading.Event()
        transport.start_client(event=done)
        if not done.wait(timeout):
            raise ConnectError("unreachable", f"{where} did not complete the SSH handshake within {timeout:g}s")
        if not transport.is_active():
            exc = transport.get_exception()
            text = str(exc) if exc else "connection closed during handshake"
            if isinstance(exc, IncompatiblePeer) and pinned is not None and "host key" in text:
                raise ConnectError(
                    "host_key_mismatch",
                    f"{where} offers no host key of the pinned type {pinned[0]}",
                )
            if "banner" in text.lower():
                raise ConnectError(
                    "unreachable",
                    f"{where} accepted TCP but sent no SSH banner within {transport.banner_timeout:g}s",
                )
            raise ConnectError("unreachable", f"SSH handshake with {where} failed: {text}")
        presented = host_key_line(transport.get_remote_server_key())
        if pinned is not None and _normalize_key_line(presented) != pinned:
            raise ConnectError(
                "host_key_mismatch",
                f"host key of {where} changed: pinned {pinned[0]} {fingerprint(' '.join(pinned))}, "
                f"presented {fingerprint(presented)} (possible man-in-the-middle or rebuilt host)",
            )
        return presented

    def _authenticate(self, transport: paramiko.Transport, spec: ConnectionSpec) -> None:
        """Public key first (if any), then password (or keyboard-interactive answering with it)."""
        where = f"{spec.host}:{spec.port}"
        tried: list[str] = []
        try:
            if spec.private_key:
                pkey = self.keys.get(_secret_digest(spec),
                                     lambda: load_private_key(spec.private_key, spec.passphrase))
                tried.append(f"publickey ({pkey.get_name()})")
                try:
                    transport.auth_publickey(spec.username, pkey)
                except BadAuthenticationType as exc:
                    logger.debug("publickey not allowed on %s (allowed: %s)", where, exc.allowed_types)
                except AuthenticationException as exc:
                    self._raise_if_timeout(exc, where)
            if not transport.is_authenticated() and spec.password is not None:
                tried.append("password")
                password = spec.password
                try:
                    transport.auth_password(spec.username, password)
                except BadAuthenticationType as exc:
                    if "keyboard-interactive" in exc.allowed_types:
                        tried.append("keyboard-interactive")

                        def answer(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
                            return [password for _ in prompts]

                        try:
                            transport.auth_interactive(spec.username, answer)
                        except AuthenticationException as exc2:
                            self._raise_if_timeout(exc2, where)
                except AuthenticationException as exc:
                    self._raise_if_timeout(exc, where)
        except ConnectError:
            raise
        except (SSHException, EOFError, OSError) as exc:
            raise ConnectError("unreachable", f"connection to {where} lost during authentication: {type(exc).__name__}") from None
        if not tried:
            raise ConnectError("auth_failed", f"no credentials (private key or password) for {spec.username}@{where}")
        if not transport.is_authenticated():
            raise ConnectError(
                "auth_failed",
                f"authentication as {spec.username!r} on {where} failed (tried {', '.join(tried)})",
            )

    @staticmethod
    def _raise_if_timeout(exc: AuthenticationException, where: str) -> None:
        # paramiko reports an unanswered auth request as an AuthenticationException; that is a
        # sick host, not a bad credential.
        if "timeout" in str(exc).lower():
            raise ConnectError("unreachable", f"{where} did not answer authentication in time") from None
        logger.debug("authentication rejected by %s", where)
