"""The Python SDK's event stream reconnects and resumes by itself (issue 12 item 3).

Against the live embedded server, through a TCP proxy the test cuts: a stream on one execution,
cut twice mid-execution (once with the server unreachable for a while, branches finishing
meanwhile), yields every event exactly once, in seq order, reconnecting with since=<last seq>;
a 1008 (the user deactivated) ends it without a reconnect. Against a scripted WebSocket stub (pure
client logic, as the 429 tests are): a "resume" message and 1013 close make it reconnect from the
message's positions, a replayed seq is never yielded twice, and a job-filtered stream reconnects
without since."""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import pytest
from enabledrm_sdk import EnableDRMClient, Event

from tests.gate import Gate
from tests.sdk.conftest import LiveServer
from tests.sshd import wait_until

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------------------- a cuttable proxy


class CuttableProxy:
    """A TCP proxy to the server. ``cut()`` drops every open connection without a WebSocket close;
    with ``refuse=True`` it also closes every new connection at once (the server looks down) until
    ``reopen()``. ``requests`` holds each connection's request line, in order."""

    def __init__(self, upstream_port: int):
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests: list[str] = []
        self.refused = 0
        self._refusing = False
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                self.refused += 1
                _reset(client)
                continue
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        first = from_client
        try:
            while data := source.recv(65536):
                if first:
                    self.requests.append(data.split(b"\r\n", 1)[0].decode("latin-1"))
                    first = False
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)  # an orderly end passes on as one: what was sent still arrives
        except OSError:  # cut, or reset by a peer
            for sock in (source, sink):
                _reset(sock)

    def ws_requests(self) -> list[dict[str, list[str]]]:
        """The query of each /ws/executions request, in order."""
        return [parse_qs(urlsplit(line.split()[1]).query, keep_blank_values=True)
                for line in self.requests if line.split()[1].startswith("/ws/executions")]

    def cut(self, refuse: bool = False) -> None:
        self._refusing = refuse
        with self._lock:
            doomed, self._open = self._open, []
        for sock in doomed:
            _reset(sock)

    def reopen(self) -> None:
        self._refusing = False

    def close(self) -> None:
        self._closed = True
        _stop_listening(self._listener)
        self.cut()


def _reset(sock: socket.socket) -> None:
    """Drop the connection: no FIN handshake the peer could take for a clean end, an RST."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _stop_listening(listener: socket.socket) -> None:
    try:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
    except OSError:
        pass
    listener.close()


@contextmanager
def proxy_to(server: LiveServer) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(urlsplit(server.base_url).port or 80)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def admin(sdk_server: LiveServer) -> Iterator[EnableDRMClient]:
    client = EnableDRMClient(sdk_server.base_url)
    client.auth.login(sdk_server.admin_username, sdk_server.admin_password)
    yield client
    client.close()


def _gated_job(admin: EnableDRMClient, gate: Gate, branches: int):
    tag = uuid.uuid4().hex[:8]
    targets = [admin.targets.create(f"resume-{tag}-{i}", connection="local") for i in range(branches)]
    return admin.jobs.create(f"resume-{tag}", [{"action_type": "command", "action_name": "gate",
                                                "action_parameters": {"command": gate.command}}],
                             target_ids=[t.id for t in targets])


def _take(stream, count: int) -> list[Event]:
    return [stream.next() for _ in range(count)]


def _completed_branches(admin: EnableDRMClient, execution_serial: str) -> int:
    return sum(b.status == "completed" for b in admin.executions.get_by_serial(execution_serial).branches)


# ------------------------------------------------------------------------------------------ live server


def test_a_cut_stream_on_one_execution_resumes_with_since_and_yields_every_event_once(sdk_server, admin):
    with Gate() as gate, proxy_to(sdk_server) as proxy:
        job = _gated_job(admin, gate, 4)
        serial = admin.jobs.execute(job.job_serial).execution_serial
        gate.wait_for_waiting(4)
        watcher = EnableDRMClient(proxy.url, token=admin.token)
        with watcher.executions.events(execution_serial=serial, since=0, timeout=30) as stream:
            seen = _take(stream, 5)  # execution_started and the four branch_started
            assert [e.data.seq for e in seen] == [1, 2, 3, 4, 5]

            # away while two branches finish: the proxy refuses the first reconnects, then lets one through
            proxy.cut(refuse=True)
            gate.release(2)
            wait_until(lambda: _completed_branches(admin, serial) == 2, timeout=30, interval=0.05,
                       message="two branches to finish while the stream is cut")
            opener = threading.Thread(target=lambda: (wait_until(lambda: proxy.refused >= 2, timeout=30,
                                                                 message="two refused reconnects"), proxy.reopen()))
            opener.start()
            seen += _take(stream, 2)  # replayed from the event log
            opener.join()

            proxy.cut()  # a plain drop: it reconnects at once
            gate.release_all()
            while seen[-1].type != "execution_completed":
                event = stream.next()
                assert event is not None, "the stream ended before execution_completed"
                seen.append(event)
            assert stream.reconnects == 2
            assert stream.positions == {serial: 10}

    assert [e.data.seq for e in seen] == list(range(1, 11))
    assert [e.type for e in seen].count("branch_started") == 4
    assert [e.type for e in seen].count("branch_completed") == 4
    assert seen[0].type == "execution_started" and seen[-1].type == "execution_completed"
    assert all(e.data.execution_serial == serial for e in seen)
    queries = proxy.ws_requests()
    assert [q.get("since") for q in queries] == [["0"], ["5"], ["7"]], queries


def test_a_1008_close_ends_the_stream_without_a_reconnect(sdk_server, admin):
    username = f"resume-{uuid.uuid4().hex[:8]}"
    user = admin.users.create(username, "resume-password-1", role="viewer")
    with proxy_to(sdk_server) as proxy:
        viewer = EnableDRMClient(proxy.url)
        viewer.auth.login(username, "resume-password-1")
        with viewer.executions.events(execution_serial="J20990001.0001", timeout=20) as stream:
            admin.users.update(user.id, is_active=False)
            assert stream.next() is None  # the server re-checks the token every 5 s and closes with 1008
            assert stream.closed and (stream.close_code, stream.close_reason) == (1008, "user disabled")
            assert stream.reconnects == 0
    assert len(proxy.ws_requests()) == 1


# ------------------------------------------------------------------------------- a scripted stub server

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(opcode: int, payload: bytes) -> bytes:
    head = bytes([0x80 | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    return head + bytes([126]) + struct.pack("!H", len(payload)) + payload


class StubEventServer:
    """A WebSocket server that plays one script per connection: ``("send", message)``,
    ``("close", code, reason)`` (a close frame), ``("drop",)`` (the TCP connection ends, no close frame) or
    ``("hold",)`` (stay open until the client goes). ``paths`` holds each request's path."""

    def __init__(self, scripts: list[list[tuple]]):
        self.scripts = scripts
        self.paths: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        for script in self.scripts:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._play, args=(conn, script), daemon=True).start()

    def _play(self, conn: socket.socket, script: list[tuple]) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        lines = request.decode("latin-1").split("\r\n")
        self.paths.append(lines[0].split()[1])
        key = next(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("sec-websocket-key"))
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        for step in script:
            if step[0] == "send":
                conn.sendall(_frame(0x1, json.dumps(step[1]).encode()))
            elif step[0] == "close":
                conn.sendall(_frame(0x8, struct.pack("!H", step[1]) + step[2].encode()))
            elif step[0] == "drop":
                break  # the connection ends without a close frame (FIN: what was sent before still arrives)
            elif step[0] == "hold":
                try:
                    while conn.recv(4096):
                        pass
                except OSError:
                    pass
        conn.close()

    def close(self) -> None:
        _stop_listening(self._listener)


SUBSCRIBED = ("send", {"type": "subscribed", "data": {}})
SERIAL = "J20250001.0001"


def _event(seq: int, kind: str = "branch_completed", serial: str = SERIAL) -> tuple:
    return ("send", {"type": kind, "data": {"execution_serial": serial, "job_serial": serial[:9], "seq": seq}})


@contextmanager
def stub(*scripts: list[tuple]) -> Iterator[StubEventServer]:
    server = StubEventServer(list(scripts))
    try:
        yield server
    finally:
        server.close()


def _drain(stream) -> list[tuple[str, int]]:
    return [(e.data.execution_serial, e.data.seq) for e in stream]


def test_a_resume_message_and_1013_reconnect_from_its_positions_without_repeating_an_event():
    with stub([SUBSCRIBED, _event(1, "execution_started"), _event(2), _event(3),
               ("send", {"type": "resume", "data": {"since": {SERIAL: 2}}}),
               ("close", 1013, "too slow; resume with since=2")],
              [SUBSCRIBED, _event(3), _event(4), _event(5, "execution_completed"), ("hold",)]) as server:
        client = EnableDRMClient(server.url, token="stub-token")
        with client.executions.events(execution_serial=SERIAL, timeout=10) as stream:
            got = []
            for event in stream:
                got.append((event.data.execution_serial, event.data.seq))
                if event.type == "execution_completed":
                    break
            assert stream.reconnects == 1
    assert got == [(SERIAL, n) for n in range(1, 6)]
    assert [parse_qs(urlsplit(p).query).get("since") for p in server.paths] == [None, ["2"]]


def test_a_job_filtered_stream_reconnects_without_since_and_skips_what_it_already_yielded():
    other = "J20250001.0002"
    with stub([SUBSCRIBED, _event(1, "execution_started"), _event(2), _event(1, "execution_started", other),
               ("drop",)],
              [SUBSCRIBED, _event(2), _event(3), _event(1, "execution_started", other), _event(2, serial=other),
               ("close", 1008, "token revoked")]) as server:
        client = EnableDRMClient(server.url, token="stub-token")
        with client.executions.events(job_serial="J20250001", timeout=10) as stream:
            got = _drain(stream)  # ends at the 1008: no third connection
            assert stream.close_code == 1008 and stream.positions == {SERIAL: 3, other: 2}
    assert got == [(SERIAL, 1), (SERIAL, 2), (other, 1), (SERIAL, 3), (other, 2)]
    assert [parse_qs(urlsplit(p).query) for p in server.paths] == [{"job_serial": ["J20250001"]}] * 2


def test_reconnect_false_ends_the_stream_when_the_connection_drops():
    with stub([SUBSCRIBED, _event(1, "execution_started"), ("drop",)]) as server:
        client = EnableDRMClient(server.url, token="stub-token")
        with client.executions.events(execution_serial=SERIAL, timeout=10, reconnect=False) as stream:
            assert _drain(stream) == [(SERIAL, 1)]
    assert len(server.paths) == 1
