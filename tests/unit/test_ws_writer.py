"""Live events written to WebSockets from two threads: SerialSocket (frames whole and in order, the
rest of a non-blocking write finished first by the blocking one), Subscription.offer with a direct
taker, and the relay's _Stream over real TCP sockets and a real simple-websocket server: what the
bus's thread writes never overtakes, follows or corrupts what the socket's own thread writes."""
from __future__ import annotations

import base64
import datetime
import json
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from simple_websocket import Server
from wsproto.frame_protocol import FrameProtocol, Opcode

from api import ws as ws_module
from api.ws import OUTPUT_PENDING_BYTES, _Stream, _too_slow
from api.ws_writer import SerialSocket, frame_of, text_frame
from common.events import OUTPUT, RESYNC, LocalEventBus, RedisEventBus, Subscription, WireEvent
from tests.faults.harness import RedisServer
from tests.sshd import wait_until

SERIAL = "J20260001.0001"
DEADLINE = 10.0
SMALL_BUFFER = 16 << 10


def _tcp_pair(small: bool = False) -> tuple[socket.socket, socket.socket]:
    """(server end, client end) of a loopback TCP connection; ``small``: little room in the kernel,
    so a client that does not read stalls the server's writes after a few KiB."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        if small:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    if small:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    return server, client


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(DEADLINE)
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        if not chunk:
            break
        data += chunk
    return bytes(data)


class Peer:
    """The client's end of a WebSocket, read raw: every frame the server wrote, control frames too."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()
        self.frames: list[tuple[int, bytes]] = []
        self.eof = False
        while b"\r\n\r\n" not in self.buffer:
            self._recv()
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buffer = bytearray(rest)

    def _recv(self) -> None:
        self.sock.settimeout(0.05)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return
        if not data:
            self.eof = True
        self.buffer += data

    def _parse(self) -> None:
        buffer, at = self.buffer, 0
        while len(buffer) - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            assert first & 0x70 == 0 and second & 0x80 == 0, "a server frame is neither compressed here nor masked"
            size, start = second & 0x7F, at + 2
            if size == 126:
                size, start = int.from_bytes(buffer[at + 2:at + 4], "big"), at + 4
            elif size == 127:
                size, start = int.from_bytes(buffer[at + 2:at + 10], "big"), at + 10
            if len(buffer) < start + size:
                break
            self.frames.append((first & 0x0F, bytes(buffer[start:start + size])))
            at = start + size
        del buffer[:at]

    def read_until(self, done: Callable[[list[tuple[int, bytes]]], bool], timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.frames) and not self.eof and time.monotonic() < deadline:
            self._recv()
            self._parse()

    def texts(self) -> list[dict]:
        return [json.loads(payload) for opcode, payload in self.frames if opcode == 0x1]


def _closed(frames: list[tuple[int, bytes]]) -> bool:
    return any(opcode == 0x8 for opcode, _ in frames)


@pytest.fixture
def websocket() -> Iterator[Callable[..., tuple[Server, Peer]]]:
    """A real simple-websocket server (as under gunicorn) on a TCP connection, its socket a
    SerialSocket as in /ws/executions, and the client's end read raw."""
    made: list[tuple[Server, socket.socket]] = []

    def make(small: bool = False) -> tuple[Server, Peer]:
        server_sock, client_sock = _tcp_pair(small)
        environ = {"gunicorn.socket": server_sock, "HTTP_HOST": "127.0.0.1", "HTTP_UPGRADE": "websocket",
                   "HTTP_CONNECTION": "Upgrade", "HTTP_SEC_WEBSOCKET_VERSION": "13",
                   "HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(os.urandom(16)).decode()}
        ws = Server(environ)
        ws.sock = SerialSocket(ws.sock)
        made.append((ws, client_sock))
        return ws, Peer(client_sock)

    yield make
    for ws, client_sock in made:
        client_sock.close()  # the server's thread reads EOF, ends and closes its socket
        ws.thread.join(DEADLINE)
        assert not ws.thread.is_alive()


def _event(seq: int, kind: str = "branch_completed") -> WireEvent:
    return WireEvent({"type": kind, "data": {"execution_serial": SERIAL, "seq": seq}})


def _output(offset: int, size: int = 64 << 10) -> WireEvent:
    return WireEvent({"type": OUTPUT, "data": {"execution_serial": SERIAL, "offset": offset, "data": "x" * size}})


def _seqs(events: list[dict]) -> list[int]:
    return [e["data"]["seq"] for e in events if "seq" in e.get("data", {})]


# ---- SerialSocket ---------------------------------------------------------------------------------

def test_what_try_send_leaves_pending_is_written_first_by_the_next_send():
    server, client = _tcp_pair(small=True)
    with server, client:
        sock = SerialSocket(server)
        big = os.urandom(2 << 20)
        assert sock.try_send(big) is False
        assert 0 < sock.pending < len(big)  # the kernel took a part, the rest waits
        writer = threading.Thread(target=sock.send, args=(b"tail",))
        writer.start()
        assert _read_exactly(client, len(big) + 4) == big + b"tail"
        writer.join(DEADLINE)
        assert sock.pending == 0


def test_try_send_while_another_thread_writes_waits_behind_it_untouched():
    server, client = _tcp_pair(small=True)
    with server, client:
        sock = SerialSocket(server)
        first = os.urandom(2 << 20)
        writer = threading.Thread(target=sock.send, args=(first,))
        writer.start()
        # the writer is inside its sendall (its bytes reach the client) and stalls: the client does not read
        wait_until(lambda: bool(select.select([client], [], [], 0)[0]) and sock._lock.locked(),
                   message="the blocking send to hold the lock")
        assert sock.try_send(b"second") is False
        assert sock.pending == len(b"second")
        assert _read_exactly(client, len(first)) == first  # whole, nothing cut into it
        writer.join(DEADLINE)
        sock.send(b"third")
        assert _read_exactly(client, 11) == b"secondthird"


def test_frames_from_many_threads_arrive_whole_and_each_thread_in_its_order(websocket):
    """The relay's thread (try_send, then send of what is left) and simple-websocket's own (pings)
    write at once; the client parses every frame intact."""
    ws, peer = websocket(small=True)
    sock: SerialSocket = ws.sock
    events = [text_frame(json.dumps({"n": n, "pad": "y" * (n * 997 % 70000)})) for n in range(200)]

    def relay() -> None:
        for frame in events:
            if not sock.try_send(frame):
                sock.send(b"")

    def pings() -> None:
        for n in range(200):
            sock.send(bytes([0x89, 1, n % 256]))

    threads = [threading.Thread(target=relay), threading.Thread(target=pings)]
    for thread in threads:
        thread.start()
    peer.read_until(lambda frames: len(frames) >= 400)
    for thread in threads:
        thread.join(DEADLINE)
    assert [m["n"] for m in peer.texts()] == list(range(200))
    assert [payload[0] for opcode, payload in peer.frames if opcode == 0x9] == [n % 256 for n in range(200)]


def test_a_gone_peer_never_raises_into_try_send_and_send_reports_it():
    server, client = _tcp_pair()
    sock = SerialSocket(server)
    client.close()
    # the first writes may still be taken by the kernel before the peer's reset comes back
    wait_until(lambda: sock.try_send(b"x" * 1000) is False, message="the kernel's buffers to fill")
    with pytest.raises(OSError):
        sock.send(b"y")
    server.close()  # and a socket closed on our side (its simple-websocket thread ended)
    assert sock.try_send(b"z") is False
    with pytest.raises(OSError):
        sock.send(b"z")


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_over_tls_try_send_leaves_everything_to_the_blocking_send(tmp_path):
    """gunicorn with --certfile hands simple-websocket an SSLSocket, which takes no send flags: the
    bus's thread must not raise (its events would count as delivered and be lost), the socket's own
    thread writes them."""
    cert, key = _self_signed()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_context = ssl.create_default_context(cafile=tmp_path / "cert.pem")
    raw_server, raw_client = _tcp_pair()
    tls: dict[str, ssl.SSLSocket] = {}
    handshake = threading.Thread(
        target=lambda: tls.setdefault("client", client_context.wrap_socket(raw_client, server_hostname="localhost")))
    handshake.start()
    server = server_context.wrap_socket(raw_server, server_side=True)
    handshake.join(DEADLINE)
    with server, tls["client"] as client:
        sock = SerialSocket(server)
        assert sock.try_send(b"hello") is False and sock.pending == 5
        sock.send(b" world")
        assert _read_exactly(client, 11) == b"hello world"


def test_frames_are_valid_uncompressed_text_frames_made_once_per_event():
    for size in (0, 125, 126, 65535, 65536, 70000):
        text = "é" * (size // 2) + "x" * (size % 2)
        parser = FrameProtocol(client=True, extensions=[])
        parser.receive_bytes(text_frame(text))
        frames = list(parser.received_frames())
        assert "".join(f.payload for f in frames) == text
        assert frames[0].opcode is Opcode.TEXT and frames[-1].message_finished
    event = _event(1)
    assert frame_of(event) is frame_of(event)  # the first socket makes it, every other reuses it
    plain = {"type": "branch_completed", "data": {"seq": 1}}
    assert frame_of(plain) == text_frame(json.dumps(plain))


# ---- Subscription.offer with a direct taker ------------------------------------------------------

class Taker:
    """A direct taker that takes what it is told to, recording every batch it is handed."""

    def __init__(self, takes: bool = True):
        self.takes = takes
        self.batches: list[list[dict]] = []

    def __call__(self, events: list[dict]) -> bool:
        self.batches.append(events)
        return self.takes


def _subscription(include_output: bool = False, takes: bool = True) -> tuple[Subscription, Taker]:
    subscription = LocalEventBus().subscribe(include_output=include_output)
    taker = Taker(takes)
    subscription.direct = taker
    return subscription, taker


def test_a_batch_the_taker_declines_is_queued_and_wakes_the_waiter():
    subscription, taker = _subscription(takes=False)
    subscription.offer([_event(1), _event(2)])
    assert len(taker.batches) == 1
    started = time.monotonic()
    subscription.wait(30)
    assert time.monotonic() - started < DEADLINE
    assert _seqs(subscription.get_many(timeout=0)) == [1, 2]


def test_while_anything_waits_in_the_queue_later_batches_queue_behind_it():
    subscription, taker = _subscription(takes=False)
    subscription.offer([_event(1)])
    taker.takes = True
    subscription.offer([_event(2)])
    subscription.offer([_event(3)])
    assert len(taker.batches) == 1  # never handed 2 or 3 past 1
    assert _seqs(subscription.get_many(timeout=0)) == [1, 2, 3]
    subscription.offer([_event(4)])
    assert _seqs(taker.batches[-1]) == [4] and subscription.get_many(timeout=0) == []


def test_output_reaches_only_a_taker_that_asked_for_it():
    plain, plain_taker = _subscription()
    plain.offer([_output(0), _output(1)])
    assert plain_taker.batches == []  # nothing left of the batch: not even a call
    plain.offer([_output(2), _event(1)])
    assert [[e["type"] for e in batch] for batch in plain_taker.batches] == [["branch_completed"]]
    watching, watching_taker = _subscription(include_output=True)
    watching.offer([_output(0), _event(1)])
    assert [e["type"] for e in watching_taker.batches[0]] == [OUTPUT, "branch_completed"]


def test_a_queue_past_its_bound_overflows_and_takes_nothing_more():
    subscription, taker = _subscription(takes=False)
    subscription.maxsize = 3
    subscription.offer([_event(n) for n in range(1, 6)])
    assert subscription.overflowed
    assert _seqs(subscription.get_many(timeout=0)) == [1, 2, 3]
    subscription.offer([_event(6)])
    assert len(taker.batches) == 1 and subscription.get_many(timeout=0) == []


def test_queued_output_beyond_the_backlog_is_skipped_numbered_events_never():
    subscription, _ = _subscription(include_output=True, takes=False)
    subscription.output_backlog = 2
    subscription.offer([_output(n, 10) for n in range(5)] + [_event(1)])
    queued = subscription.get_many(timeout=0)
    assert [e["type"] for e in queued] == [OUTPUT, OUTPUT, "branch_completed"]
    assert subscription.output_skipped == 3 and not subscription.overflowed


# ---- _Stream: the bus's thread and the socket's thread on one socket -------------------------------

def _stream(ws: Server, include_output: bool = False) -> _Stream:
    subscription = LocalEventBus().subscribe(include_output=include_output)
    stream = _Stream(ws, subscription, {})
    subscription.direct = stream.direct
    return stream


def test_a_batch_while_the_socket_thread_holds_the_lock_is_queued_and_goes_out_in_order(websocket):
    ws, peer = websocket()
    stream = _stream(ws)
    with stream.lock:  # the socket's thread in a round (or reading the log)
        stream.subscription.offer([_event(1), _event(2)])
    stream.subscription.offer([_event(3)])  # its lock is free, but 1 and 2 wait in the queue
    peer.read_until(lambda frames: False, timeout=0.2)
    assert peer.frames == []
    assert stream.round()
    stream.subscription.offer([_event(4)])  # nothing queued: written by the bus's thread itself
    peer.read_until(lambda frames: len(frames) == 4)
    assert _seqs(peer.texts()) == [1, 2, 3, 4]


def test_a_resync_is_left_to_the_socket_thread(websocket):
    ws, peer = websocket()
    stream = _stream(ws)
    stream.subscription.offer([{"type": RESYNC, "data": {}}, _event(1)])
    assert [e["type"] for e in stream.subscription.get_many(timeout=0)] == [RESYNC, "branch_completed"]


def test_a_gap_left_by_the_bus_thread_wakes_the_socket_thread_to_fill_it_in_time(websocket):
    ws, peer = websocket()
    stream = _stream(ws)
    stream.subscription.offer([_event(1), _event(3)])
    peer.read_until(lambda frames: len(frames) == 1)
    assert _seqs(peer.texts()) == [1]
    started = time.monotonic()
    stream.subscription.wait(30)
    assert time.monotonic() - started < DEADLINE
    assert stream.relay.next_due() is not None


def test_no_event_follows_the_resume_of_a_client_too_slow(websocket, monkeypatch):
    """The bus's thread took `direct` just before the socket's thread, finding the client too slow,
    cleared it: that batch, handed over between the resume and the close, is not written (the client
    would get seq 2 after being told to resume after 1, and again on resuming)."""
    ws, peer = websocket()
    stream = _stream(ws)
    late = stream.subscription.direct
    stream.subscription.offer([_event(1)])
    stream.subscription.overflowed = True
    refuse = ws_module._refuse

    def listener_slips_in(ws, code, message):
        late([_event(2)])
        refuse(ws, code, message)

    monkeypatch.setattr(ws_module, "_refuse", listener_slips_in)
    _too_slow(ws, stream, {"username": "slow"})
    late([_event(3)])  # and after the close
    peer.read_until(_closed)
    peer.read_until(lambda frames: False, timeout=0.3)  # anything written after the close
    texts = peer.texts()
    assert texts[-1] == {"type": "resume", "data": {"since": {SERIAL: 1}}}
    assert _seqs(texts) == [1]
    assert peer.frames[-1][0] == 0x8


def test_a_burst_of_output_is_skipped_beyond_the_limit_not_held_until_the_client_is_too_slow(websocket):
    """One batch of output chunks (a few branches printing fast) larger than the pending limit: the
    chunks beyond it are skipped, as the queue did; holding them all made the next batch find a
    client that reads too slow, and closed it with 1013."""
    ws, peer = websocket(small=True)
    stream = _stream(ws, include_output=True)
    stream.subscription.offer([_output(n) for n in range(100)])  # 6.4 MiB
    assert ws.sock.pending <= OUTPUT_PENDING_BYTES + len(frame_of(_output(0)))
    assert stream.subscription.output_skipped > 0
    stream.subscription.offer([_event(1)])
    assert not stream.too_slow
    writing = threading.Thread(target=stream.round)  # the socket's thread: a blocking write of the rest
    writing.start()
    peer.read_until(lambda frames: any(opcode == 0x1 and b'"seq"' in payload for opcode, payload in frames))
    writing.join(DEADLINE)
    offsets = [e["data"]["offset"] for e in peer.texts() if e["type"] == OUTPUT]
    assert offsets == sorted(offsets) and len(offsets) + stream.subscription.output_skipped == 100
    assert _seqs(peer.texts()) == [1]


# ---- the Redis bus's batches ----------------------------------------------------------------------

@pytest.fixture
def redis_bus(redis_url) -> Iterator[RedisEventBus]:
    bus = RedisEventBus(redis_url)
    yield bus
    bus.close()


def _collect(subscription: Subscription, count: int) -> list[dict]:
    received: list[dict] = []
    deadline = time.monotonic() + DEADLINE
    while len(received) < count and time.monotonic() < deadline:
        received += [e for e in subscription.get_many(timeout=0.1) if e.get("type") != RESYNC]
    return received


def test_a_burst_larger_than_a_batch_loses_no_event_between_batches(redis_bus):
    redis_bus.BATCH = 3
    with redis_bus.subscribe() as subscription:
        assert redis_bus.wait_ready(DEADLINE)
        redis_bus.publish_many([("branch_completed", {"execution_serial": SERIAL, "seq": n}) for n in range(1, 11)])
        assert _seqs(_collect(subscription, 10)) == list(range(1, 11))


def test_a_message_that_is_not_an_event_is_dropped_by_the_listener(redis_bus, redis_url):
    """The relay reads every event's type and data; a stray message on the channel (an object
    without them) must not reach it: in the bus's thread its KeyError would end the listener's
    connection, and the batch with it, for every socket of the process."""
    with redis_bus.subscribe() as subscription:
        assert redis_bus.wait_ready(DEADLINE)
        client = redis.Redis.from_url(redis_url)
        client.publish(redis_bus._channel, "{}")
        client.publish(redis_bus._channel, json.dumps({"type": "x", "data": [1]}))
        client.close()
        redis_bus.publish_many([("branch_completed", {"execution_serial": SERIAL, "seq": 1})])
        received = _collect(subscription, 1)
        assert [e.get("type") for e in received] == ["branch_completed"]


STALL_SCRIPT = """local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end
local stop = now() + tonumber(ARGV[1])
while now() < stop do end
return 1"""


def test_a_message_redis_has_sent_only_part_of_is_read_whole_when_redis_stalls(tmp_path, processes):
    """The listener catches up with Redis in the middle of a 64 KiB output message while Redis is busy
    (a script here; a big MULTI or a descheduled process in a flood): it waits for the rest. A
    non-blocking read gave up on it, redis-py reconnected, and every message in flight was lost."""
    server = RedisServer(tmp_path, processes)
    server.start()
    admin = redis.Redis.from_url(server.url)
    bus = RedisEventBus(server.url)
    entered, release = threading.Event(), threading.Event()

    def hold(events: list[dict]) -> bool:  # the listener's thread stops reading here, as a busy process's does
        entered.set()
        release.wait(DEADLINE)
        subscription.direct = None
        return False

    chunk, offsets = b"x" * 65536, []
    try:
        subscription = bus.subscribe(include_output=True)
        subscription.output_backlog = 10**6
        assert bus.wait_ready(DEADLINE)
        assert [e["type"] for e in subscription.get_many(timeout=DEADLINE)] == [RESYNC]
        subscription.direct = hold
        bus.publish_many([("branch_completed", {"execution_serial": SERIAL, "seq": 1})])
        assert entered.wait(DEADLINE)

        def held_by_redis() -> int:
            return max(int(c["omem"]) for c in admin.client_list() if int(c["sub"]))

        while held_by_redis() < (1 << 20) and len(offsets) < 2000:  # the kernel's buffers full, Redis holding more
            offsets += range(len(offsets) * len(chunk), (len(offsets) + 16) * len(chunk), len(chunk))
            bus.publish_many([("branch_output", {"execution_serial": SERIAL, "stream": "stdout", "offset": offset,
                                                 "data": chunk}) for offset in offsets[-16:]])
        assert held_by_redis() >= 1 << 20

        stall = threading.Thread(target=admin.eval, args=(STALL_SCRIPT, 0, 3_000_000))  # below READ_SECONDS
        stall.start()
        probe = redis.Redis.from_url(server.url, socket_timeout=0.2, retry=None)

        def stalled() -> bool:
            try:
                probe.ping()
                return False
            except redis.TimeoutError:
                return True
            finally:
                probe.close()

        wait_until(stalled, 2.0, message="the script to hold Redis")
        release.set()
        received: list[dict] = []

        def arrived() -> bool:
            received.extend(subscription.get_many(timeout=0.05))
            return sum(e["type"] != RESYNC for e in received) > len(offsets)

        wait_until(arrived, DEADLINE, message="every chunk after the stall")
        stall.join(DEADLINE)
        assert [e["type"] for e in received] == ["branch_completed"] + [OUTPUT] * len(offsets)  # no RESYNC either
        assert [e["data"]["offset"] for e in received[1:]] == offsets
    finally:
        release.set()
        bus.close()
        admin.close()
