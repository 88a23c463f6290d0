"""Opening an SSH transport to a target: TCP, banner and key exchange checked against the pinned
host key, then authentication, each phase with an explicit timeout so a wedged host costs
seconds, not paramiko's 15 s / 30 s defaults; and the keepalives that notice a link gone dark."""
from __future__ import annotations

import logging
import socket
import threading

import paramiko
from paramiko.ssh_exception import (
    AuthenticationException,
    BadAuthenticationType,
    IncompatiblePeer,
    SSHException,
)

from common.hostkeys import fingerprint
from common.statuses import ErrorType

from .base import ConnectError, ConnectionSpec
from .ssh_keys import (
    KeyCache,
    host_key_algorithms,
    host_key_line,
    load_private_key,
    normalize_key_line,
    secret_digest,
)
from .ssh_pool import PooledConnection

logger = logging.getLogger(__name__)

KEEPALIVE_PROBES = 3  # TCP keepalive probes left unanswered before the kernel drops the link


def user_timeout(keepalive: float) -> float:
    """Seconds data may stay unacknowledged before the kernel gives the link up (0 = never).

    Twice the keepalive interval: an SSH keepalive leaves at most one interval after the link went
    silent, so a dead link is noticed within about three intervals, while a live but slow one
    (a congested WAN, a busy target) gets two whole intervals to acknowledge anything.
    """
    return 2 * keepalive if keepalive > 0 else 0.0


class _LinkSocket(socket.socket):
    """A TCP socket that remembers the error the kernel ended the link with.

    paramiko takes any TimeoutError from ``recv`` for its own 0.1 s poll running out, and since
    Python 3.10 the kernel's ETIMEDOUT (TCP_USER_TIMEOUT expired) is a TimeoutError too: the
    transport then dies on the next read's EOF, as if the target had closed the connection.
    This keeps the real reason, for the message that says why a command was cut off.
    """

    link_error: OSError | None = None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        try:
            return super().recv(bufsize, flags)
        except OSError as exc:
            self._note(exc)
            raise

    def send(self, data: bytes, flags: int = 0) -> int:  # type: ignore[override]
        try:
            return super().send(data, flags)
        except OSError as exc:
            self._note(exc)
            raise

    def _note(self, exc: OSError) -> None:
        if exc.errno is not None and self.link_error is None:  # errno None: a poll timing out
            self.link_error = exc


def link_error(transport: paramiko.Transport) -> OSError | None:
    """The socket error a transport's link ended with (None: closed by the peer, or not ended)."""
    return getattr(transport.sock, "link_error", None)


def tune_socket(sock: socket.socket, keepalive: float) -> None:
    """Socket options for a long-lived SSH link.

    Without them a target whose packets are silently dropped (powered off, firewalled, a NAT
    forgetting us) leaves a running command, or an idle pooled transport, waiting on TCP's own
    retransmission limit: about 15 minutes on Linux. ``TCP_USER_TIMEOUT`` bounds the time sent
    data (an SSH keepalive, at the least) may go unacknowledged; the TCP keepalive options make
    the kernel probe a link with nothing in flight (paramiko skips its keepalive while rekeying).
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if keepalive <= 0:
        return
    interval = max(1, round(keepalive))  # the kernel counts these in whole seconds
    for name, value in (("TCP_KEEPIDLE", interval), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
        option = getattr(socket, name, None)
        if option is not None:  # Linux names; other kernels keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(user_timeout(keepalive) * 1000)))


class Connector:
    """Opens authenticated transports. Phase timeouts derive from the connect timeout unless
    given here; ``keepalive`` is the SSH keepalive interval in seconds (0 = off)."""

    def __init__(
        self,
        *,
        keys: KeyCache,
        keepalive: float = 0.0,
        banner_timeout: float | None = None,
        auth_timeout: float | None = None,
    ) -> None:
        self.keys = keys
        self.keepalive = keepalive
        self.banner_timeout = banner_timeout
        self.auth_timeout = auth_timeout

    def timeouts(self, connect_timeout: float) -> tuple[float, float, float]:
        """(banner, key exchange, auth) timeouts for a connect budget of ``connect_timeout``.

        A host that accepted TCP should greet and finish key exchange within the connect budget;
        auth gets twice that because targets may delay answers (PAM fail delay, LDAP).
        """
        banner = self.banner_timeout if self.banner_timeout is not None else connect_timeout
        auth = self.auth_timeout if self.auth_timeout is not None else 2 * connect_timeout
        return banner, connect_timeout, auth

    def connect(self, spec: ConnectionSpec, *, within: float | None = None) -> PooledConnection:
        """A new authenticated transport; raises ConnectError.

        ``within`` replaces ``spec.connect_timeout`` when part of that budget is already spent
        (a pooled transport that stopped answering), so the caller's deadline holds.
        """
        where = f"{spec.host}:{spec.port}"
        connect_timeout = spec.connect_timeout if within is None else within
        banner_timeout, handshake_timeout, auth_timeout = self.timeouts(connect_timeout)
        sock = self._tcp_connect(spec, connect_timeout)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = banner_timeout
        transport.handshake_timeout = handshake_timeout
        transport.auth_timeout = auth_timeout
        pinned = normalize_key_line(spec.known_host_key) if spec.known_host_key else None
        try:
            if pinned is not None:
                opts = transport.get_security_options()
                wanted = [a for a in host_key_algorithms(pinned[0]) if a in opts.key_types]
                if wanted:
                    opts.key_types = wanted
            host_key = self._handshake(transport, spec, pinned, banner_timeout + handshake_timeout)
            self._authenticate(transport, spec)
        except BaseException:
            transport.close()
            raise
        if self.keepalive > 0:
            transport.set_keepalive(self.keepalive)
        logger.debug("connected to %s as %s", where, spec.username)
        return PooledConnection(transport=transport, host_key=host_key)

    def _tcp_connect(self, spec: ConnectionSpec, timeout: float) -> socket.socket:
        where = f"{spec.host}:{spec.port}"
        try:
            sock = socket.create_connection((spec.host, spec.port), timeout=timeout)
        except socket.gaierror as exc:
            raise ConnectError(ErrorType.UNREACHABLE, f"cannot resolve host {spec.host!r}: {exc.strerror}") from exc
        except ConnectionRefusedError as exc:
            raise ConnectError(ErrorType.UNREACHABLE, f"connection refused by {where}") from exc
        except TimeoutError as exc:
            raise ConnectError(ErrorType.UNREACHABLE, f"timed out after {timeout:g}s connecting to {where}") from exc
        except OSError as exc:
            raise ConnectError(ErrorType.UNREACHABLE, f"cannot connect to {where}: {exc.strerror or exc}") from exc
        try:
            tune_socket(sock, self.keepalive)
            sock.settimeout(None)  # paramiko sets its own poll timeout
            return _LinkSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        except OSError as exc:
            sock.close()
            raise ConnectError(ErrorType.UNREACHABLE, f"cannot set up the connection to {where}: {exc}") from exc

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
            raise ConnectError(ErrorType.UNREACHABLE, f"{where} did not complete the SSH handshake within {timeout:g}s")
        if not transport.is_active():
            exc = transport.get_exception()
            text = str(exc) if exc else "connection closed during handshake"
            if isinstance(exc, IncompatiblePeer) and pinned is not None and "host key" in text:
                raise ConnectError(
                    ErrorType.HOST_KEY_MISMATCH,
                    f"{where} offers no host key of the pinned type {pinned[0]}",
                )
            if "banner" in text.lower():
                raise ConnectError(
                    ErrorType.UNREACHABLE,
                    f"{where} accepted TCP but sent no SSH banner within {transport.banner_timeout:g}s",
                )
            raise ConnectError(ErrorType.UNREACHABLE, f"SSH handshake with {where} failed: {text}")
        presented = host_key_line(transport.get_remote_server_key())
        if pinned is not None and normalize_key_line(presented) != pinned:
            raise ConnectError(
                ErrorType.HOST_KEY_MISMATCH,
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
                private_key = spec.private_key
                pkey = self.keys.get(secret_digest(spec), lambda: load_private_key(private_key, spec.passphrase))
                tried.append(f"publickey ({pkey.get_name()})")
                try:
                    transport.auth_publickey(spec.username, pkey)
                except BadAuthenticationType as exc:
                    logger.debug("publickey not allowed on %s (allowed: %s)", where, exc.allowed_types)
                except AuthenticationException as exc:
                    _raise_if_timeout(exc, where)
            if not transport.is_authenticated() and spec.password is not None:
                tried.append("password")
                self._password(transport, spec, spec.password, tried)
        except ConnectError:
            raise
        except (SSHException, EOFError, OSError) as exc:
            raise ConnectError(
                ErrorType.UNREACHABLE, f"connection to {where} lost during authentication: {type(exc).__name__}"
            ) from None
        if not tried:
            raise ConnectError(ErrorType.AUTH_FAILED,
                               f"no credentials (private key or password) for {spec.username}@{where}")
        if not transport.is_authenticated():
            raise ConnectError(
                ErrorType.AUTH_FAILED,
                f"authentication as {spec.username!r} on {where} failed (tried {', '.join(tried)})",
            )

    @staticmethod
    def _password(transport: paramiko.Transport, spec: ConnectionSpec, password: str, tried: list[str]) -> None:
        """Password auth, or keyboard-interactive answering every prompt with the password
        (targets that allow only the latter, e.g. with PAM)."""
        where = f"{spec.host}:{spec.port}"
        try:
            transport.auth_password(spec.username, password)
        except BadAuthenticationType as exc:
            if "keyboard-interactive" not in exc.allowed_types:
                return
            tried.append("keyboard-interactive")

            def answer(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
                return [password for _ in prompts]

            try:
                transport.auth_interactive(spec.username, answer)
            except AuthenticationException as exc2:
                _raise_if_timeout(exc2, where)
        except AuthenticationException as exc:
            _raise_if_timeout(exc, where)


def _raise_if_timeout(exc: AuthenticationException, where: str) -> None:
    # paramiko reports an unanswered auth request as an AuthenticationException; that is a
    # sick host, not a bad credential.
    if "timeout" in str(exc).lower():
        raise ConnectError(ErrorType.UNREACHABLE, f"{where} did not answer authentication in time") from None
    logger.debug("authentication rejected by %s", where)
