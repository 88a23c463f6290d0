"""One checked-out SSH transport and the commands run on it.

Every command is wrapped so the remote shell first prints its PID on a marker line. sshd runs a
non-pty command's shell as a session (and process group) leader, so ``kill -- -PID`` through a
second channel reaches the whole process tree on timeout or cancel; merely closing the channel
would leave ``sleep 3600`` running on the target. Output is read from both streams in one loop
(select on the channel) so neither stream can fill its window and stall the other.
"""
from __future__ import annotations

import base64
import logging
import re
import secrets
import selectors
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Self

import paramiko
from paramiko.ssh_exception import SSHException

from common.statuses import ErrorType

from .base import ConnectError, ConnectionSpec, OutputTaps, StepRecorder, StepResult
from .ssh_connect import link_error, user_timeout
from .ssh_pool import PooledConnection, PoolKey

if TYPE_CHECKING:
    from .ssh import SSHRunner

logger = logging.getLogger(__name__)

_CANCEL_POLL = 0.02  # a threading.Event cannot be selected on: how often to look at it
_LIVENESS_POLL = 1.0  # without timeout/cancel, how often to re-check the transport
_READ_CHUNK = 64 * 1024
_MARKER_SEARCH_LIMIT = 64 * 1024  # login noise tolerated before the PID marker
_MARKER_WAIT = 2.0  # on kill, how long to wait for a PID marker not yet received
_SIGNAL_CONFIRM = 5.0  # a kill that did start on the target: how long it may take to report back


def probe_budget(connect_timeout: float) -> float:
    """How long a transport that was already open may take to open a channel.

    A live one answers in a round trip; one whose host went dark never does, and the reconnect
    that follows must still fit in the same connect timeout. A quarter of it (at least 0.5 s,
    at most half) leaves the reconnect the larger part.
    """
    return min(connect_timeout / 2, max(0.5, connect_timeout / 4))


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


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def environment_preamble(env: dict[str, str]) -> tuple[str, bytes]:
    """Shell lines that set and export each variable from a line of stdin, and those stdin lines.

    sshd drops client-sent variables unless its AcceptEnv names them, so the values travel on stdin, as
    data the shell reads, never as text it parses: each is one base64 line (no quote, newline or `$`
    left to interpret) read by `read -r` (shells read a pipe byte by byte, so the rest of stdin is left
    for the command: a script action's script) and decoded by `base64 -d`. The `x` keeps trailing
    newlines that command substitution would strip. Names are checked identifiers, the only text spliced.
    """
    lines: list[str] = []
    data = bytearray()
    for name in sorted(env):
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        failed = f'{{ echo "opsconductor: cannot read {name} from stdin (base64 missing?)" >&2; exit 97; }}'
        lines.append(f'IFS= read -r {name} && {name}=$(printf %s "${name}" | base64 -d && printf x) || {failed}\n'
                     f'{name}="${{{name}%x}}"; export {name}\n')
        data += base64.b64encode(env[name].encode("utf-8", "surrogateescape")) + b"\n"
    return "".join(lines), bytes(data)


def _write_stdin(chan: paramiko.Channel, data: bytes) -> None:
    """Feed stdin from its own thread: a blocked send (full window) never stalls reading."""
    try:
        chan.sendall(data)
        chan.shutdown_write()
    except (OSError, SSHException, EOFError):
        # The command exited or closed stdin early (e.g. `head -c1`): not an error by itself.
        logger.debug("stdin not fully written: remote side closed it")


class _RemoteCommand:
    """A started command: its channel, the PID marker not yet seen, the stdin writer, and the
    recorder its output goes to."""

    def __init__(
        self,
        chan: paramiko.Channel,
        parser: _PidMarker,
        recorder: StepRecorder,
        on_start: Callable[[int], None] | None,
        writer: threading.Thread | None,
    ) -> None:
        self.chan = chan
        self.parser = parser
        self.recorder = recorder
        self._on_start = on_start
        self._writer = writer
        self._sel = selectors.DefaultSelector()
        self._sel.register(chan, selectors.EVENT_READ)  # channel fileno: readable on data/EOF/close

    @property
    def pid(self) -> int | None:
        return self.parser.pid

    def drain(self) -> None:
        """Take whatever has arrived, without blocking."""
        chan = self.chan
        while chan.recv_ready():
            self.recorder.out.feed(self.parser.feed(chan.recv(_READ_CHUNK)))
        while chan.recv_stderr_ready():
            self.recorder.err.feed(chan.recv_stderr(_READ_CHUNK))
        if self._on_start is not None and self.parser.pid is not None:
            report, self._on_start = self._on_start, None
            try:
                report(self.parser.pid)
            except Exception:
                # the command runs already: killing it over a bookkeeping failure would be worse
                logger.exception("on_start callback failed for remote PID %s", self.parser.pid)

    def finished(self) -> bool:
        chan = self.chan
        if chan.recv_ready() or chan.recv_stderr_ready():
            return False
        return chan.closed or (bool(chan.eof_received) and chan.status_event.is_set())

    def wait(self, timeout: float) -> None:
        """Block until the channel has news (data, EOF, exit status, close) or ``timeout`` passes."""
        if self.chan.eof_received:
            # After EOF the channel's pipe stays readable forever: wait on the exit status instead.
            self.chan.status_event.wait(timeout)
        else:
            self._sel.select(timeout)

    def read(self, deadline: float | None, cancel: threading.Event | None,
             link_alive: Callable[[], bool]) -> ErrorType | None:
        """Read until the command ends or the link dies (None), the deadline passes (TIMEOUT) or
        ``cancel`` is set (CANCELLED)."""
        while True:
            self.drain()
            if self.finished():
                return None
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                return ErrorType.CANCELLED
            if deadline is not None and now >= deadline:
                return ErrorType.TIMEOUT
            if not link_alive():
                return None
            wait = _LIVENESS_POLL if deadline is None else min(_LIVENESS_POLL, deadline - now)
            if cancel is not None:
                wait = min(wait, _CANCEL_POLL)
            self.wait(wait)

    def flush(self) -> None:
        """Output held back while looking for the marker is output after all."""
        self.recorder.out.feed(self.parser.flush())

    def close(self) -> None:
        self._sel.close()
        self.chan.close()
        if self._writer is not None:
            self._writer.join(timeout=5)


class SSHSession:
    """One checked-out transport to one target; ``run`` may be called repeatedly."""

    def __init__(self, runner: SSHRunner, spec: ConnectionSpec, key: PoolKey, conn: PooledConnection,
                 reused: bool) -> None:
        self._runner = runner
        self._spec = spec
        self._key = key
        self._conn: PooledConnection | None = conn
        self._link_lost = False  # a kill channel got no answer: never pool this transport again
        self.reused = reused  # True when the transport came from the pool
        self.host_key: str | None = conn.host_key

    @property
    def transport(self) -> paramiko.Transport | None:
        return self._conn.transport if self._conn else None

    @property
    def _where(self) -> str:
        return f"{self._spec.host}:{self._spec.port}"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Hand the transport back to the pool (or close it if it died)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._link_lost:
            self._runner.pool.discard(conn)
        else:
            self._runner.pool.release(self._key, conn)

    def _link_alive(self) -> bool:
        return self._conn is not None and self._conn.transport.is_active()

    # -- starting ----------------------------------------------------------------------------

    def _open_channel(self) -> paramiko.Channel:
        """A fresh exec channel, within ``spec.connect_timeout`` whatever state the transport is in.

        A transport that was open before (pooled, or used by the previous command) may lead to a
        host that went dark while it sat idle; it gets a short budget to answer, then a new
        connection gets the rest of the connect timeout (safe: nothing has run yet). Two full
        timeouts in a row would make a dead pooled link cost twice what a fresh connect does.
        """
        if self._conn is None:
            raise ConnectError(ErrorType.UNREACHABLE, "session is closed")
        spec = self._spec
        deadline = time.monotonic() + spec.connect_timeout
        budget = min(self._runner.channel_open_timeout, probe_budget(spec.connect_timeout))
        try:
            return self._conn.transport.open_session(timeout=budget)
        except (SSHException, EOFError, OSError) as exc:
            logger.info("SSH transport to %s unusable (%s); reconnecting", self._where, exc)
        self._runner.pool.discard(self._conn)
        self._conn = None
        try:
            conn = self._runner.connect(spec, within=max(0.05, deadline - time.monotonic()))
        except ConnectError as exc:
            raise ConnectError(exc.error_type, f"{exc.message} (reconnecting after the open connection "
                                               "stopped answering)") from exc
        self._conn = conn
        self._link_lost = False
        self.reused = False
        self.host_key = conn.host_key
        try:
            return conn.transport.open_session(timeout=max(budget, deadline - time.monotonic()))
        except (SSHException, EOFError, OSError) as exc:
            raise ConnectError(ErrorType.UNREACHABLE, f"cannot open a channel on {self._where}: {exc}") from exc

    def _start(self, command: str, stdin: bytes | None, recorder: StepRecorder,
               on_start: Callable[[int], None] | None, env: dict[str, str] | None = None) -> _RemoteCommand:
        """Open a channel and exec the wrapped command; raises ConnectError when it never ran."""
        preamble = ""
        if env:
            preamble, values = environment_preamble(env)
            stdin = values + (stdin or b"")
        chan = self._open_channel()
        marker = f"__OPSC_{secrets.token_hex(8)}_PID="
        # The first line runs before the rest is even parsed, so the PID arrives first whatever
        # the command contains; `$$` is the shell sshd made a session/group leader.
        wrapped = f"echo {marker}$$\n{preamble}{command}"
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
            raise ConnectError(ErrorType.COMMAND_FAILED, f"target refused to start the command: {exc}") from exc
        return _RemoteCommand(chan, _PidMarker(marker.encode()), recorder, on_start, writer)

    # -- running -----------------------------------------------------------------------------

    def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
        on_start: Callable[[int], None] | None = None,
        env: dict[str, str] | None = None,
        output: OutputTaps | None = None,
    ) -> StepResult:
        """Run ``command`` to its end, its timeout, a cancel or the loss of the link.

        ``on_start`` is called once with the remote PID (the session and process group leader)
        as soon as the shell reports it: a worker that dies mid-command leaves that group running
        on the target, and whoever takes over needs the PID to kill it.
        """
        deadline = time.monotonic() + timeout if timeout is not None else None
        recorder = StepRecorder(self._runner.output_cap, output)
        if cancel is not None and cancel.is_set():
            return recorder.result(None, ErrorType.CANCELLED, "cancelled before the command started")
        try:
            started = self._start(command, stdin, recorder, on_start, env)
        except ConnectError as exc:
            return recorder.result(None, exc.error_type, exc.message)
        try:
            stop = started.read(deadline, cancel, self._link_alive)
            if stop is not None:
                what = f"command did not finish within {timeout:g}s" if stop == ErrorType.TIMEOUT \
                    else "command cancelled while running"
                killed = self._terminate(started)
                started.flush()
                return recorder.result(None, stop, f"{what}; {killed}")
            started.flush()
            return self._classify_exit(started, recorder)
        finally:
            started.close()

    def _classify_exit(self, started: _RemoteCommand, recorder: StepRecorder) -> StepResult:
        code = started.chan.exit_status  # paramiko keeps -1 until an exit-status message arrives
        if code == 0:
            return recorder.result(0, None, None)
        if code > 0:
            return recorder.result(code, ErrorType.COMMAND_FAILED, f"command exited with status {code}")
        if not self._link_alive():
            return recorder.result(None, ErrorType.CONNECTION_LOST,
                                   f"connection to {self._where} lost while the command ran ({self._loss_reason()}); "
                                   "the command may still be running there")
        return recorder.result(None, ErrorType.COMMAND_FAILED,
                               "command ended without an exit status (killed by a signal?)")

    def _loss_reason(self) -> str:
        error = link_error(self._conn.transport) if self._conn is not None else None
        if error is None:
            return "closed by the target"
        if isinstance(error, TimeoutError):
            keepalive = self._runner.keepalive
            return f"no answer for {user_timeout(keepalive):g}s" if keepalive > 0 else "no answer"
        if isinstance(error, ConnectionResetError):
            return "reset by the target"
        return error.strerror or str(error)

    # -- killing -----------------------------------------------------------------------------

    def _terminate(self, started: _RemoteCommand) -> str:
        """TERM the remote process group, wait up to the grace period for the command to end,
        then KILL the group (catches members that ignore TERM or closed their output).

        On a dead link it gives up after one kill channel that gets no answer: the action's
        timeout or the cancel has been reached already, and a second wait would only add to it.
        """
        marker_deadline = time.monotonic() + _MARKER_WAIT
        while started.pid is None and not started.parser.done and not started.finished() \
                and self._link_alive() and time.monotonic() < marker_deadline:
            started.drain()
            started.wait(0.05)
        pid = started.pid
        if pid is None:
            logger.warning("no PID marker from %s; closing the channel only", self._spec.host)
            return "remote PID unknown, channel closed (remote processes may survive)"
        if not self._signal(pid, "TERM"):
            return (f"the connection to {self._spec.host} is lost, the remote process group {pid} "
                    "could not be signalled (it may still be running)")
        grace_deadline = time.monotonic() + self._runner.kill_grace
        while not started.finished() and time.monotonic() < grace_deadline:
            started.drain()
            if started.finished():
                break
            started.wait(min(0.05, max(0.0, grace_deadline - time.monotonic())))
        killed = self._signal(pid, "KILL")
        started.drain()
        if not killed and not started.finished():
            return (f"remote process group {pid} was sent TERM, then the connection to {self._spec.host} "
                    "was lost before KILL (it may still be running)")
        return f"remote process group {pid} terminated"

    def _signal(self, pid: int, sig: str) -> bool:
        """Signal the remote process group over a second exec channel on the same transport;
        False when the link gave no answer."""
        transport = self.transport
        if self._link_lost or transport is None or not transport.is_active():
            logger.warning("cannot signal remote process group %s on %s: connection lost", pid, self._where)
            return False
        try:
            ch = transport.open_session(timeout=probe_budget(self._spec.connect_timeout))
        except (SSHException, EOFError, OSError) as exc:
            self._link_lost = True
            logger.warning("cannot signal remote process group %s on %s: %s", pid, self._where, exc)
            return False
        try:
            ch.exec_command(f"kill -s {sig} -- -{pid} 2>/dev/null; exit 0")
            ch.shutdown_write()
            if not ch.status_event.wait(_SIGNAL_CONFIRM):
                logger.warning("kill -%s of remote group %s on %s unconfirmed", sig, pid, self._where)
        except (SSHException, EOFError, OSError) as exc:
            logger.warning("could not signal remote process group %s on %s: %s", pid, self._where, exc)
            return False
        finally:
            ch.close()
        return True

    def kill_group(self, pid: int) -> str:
        """KILL remote process group ``pid`` (left behind by a worker that died) and say what happened."""
        where = self._where
        # C locale: the "No such process" text below is how an already ended group is told apart
        result = self.run(f"export LC_ALL=C; kill -s KILL -- -{pid} 2>&1",
                          timeout=self._spec.connect_timeout + _SIGNAL_CONFIRM)
        if result.exit_code == 0:
            return f"remote process group {pid} killed"
        if "No such process" in result.stdout:
            return f"remote process group {pid} had already ended"
        if result.error_type in (ErrorType.UNREACHABLE, ErrorType.AUTH_FAILED, ErrorType.HOST_KEY_MISMATCH,
                                 ErrorType.CONNECTION_LOST, ErrorType.TIMEOUT):
            return f"could not reach {where} to kill remote process group {pid}: {result.error_message}"
        said = result.stdout.strip() or result.stderr.strip() or result.error_message or "no reason given"
        return f"could not kill remote process group {pid} on {where}: {said}"
