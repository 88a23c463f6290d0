"""Hostile input never reaches a 500 (issue 9): JSON nested ~1,000 deep, out-of-range dates, secrets
under misspelled field names, loose target fields, oversized headers, chunked bodies past the cap
and huge WebSocket frames before auth. Each was tried against the platform by a hostile operator.

The first half runs in the Flask test client on both backends; the second against real servers
(the embedded werkzeug one and the Procfile's gunicorn worker) over raw sockets."""
from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import struct
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import assert_error, table_snapshot
from tests.conftest import FERNET_SECRET, JWT_SECRET, PASSWORD, make_settings, scratch_database
from tests.processes import Processes
from tests.sshd import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
MAX_DEPTH = 64
MAX_BODY = 1024 * 1024
ADMIN = "hostile-admin"


def nested(depth: int, kind: str = "object") -> str:
    """A JSON text `depth` levels deep."""
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth + "]" * depth


def post_raw(client, path: str, text: str, headers: dict | None = None):
    return client.post(path, data=text, content_type="application/json", headers=headers or {})


JOB = {"name": "hostile", "actions": [{"action_type": "command", "action_name": "a",
                                       "action_parameters": {"command": "true"}}]}


# ---------------------------------------------------------------- JSON nesting

def test_deep_json_is_a_400_on_every_json_route(client, admin, operator, viewer, make, db):
    target = make.target()
    job = client.post("/api/jobs", json={**JOB, "target_ids": [target["id"]]}, headers=operator).get_json()
    before = table_snapshot(db)
    routes = [("post", "/api/auth/login", {}), ("post", "/api/jobs", operator),
              ("patch", f"/api/jobs/{job['id']}", operator), ("post", f"/api/jobs/{job['id']}/execute", operator),
              ("post", "/api/executions/bulk", viewer), ("post", "/api/targets", admin),
              ("patch", f"/api/targets/{target['id']}", admin), ("post", "/api/credentials", admin),
              ("post", "/api/users", admin)]
    for method, path, headers in routes:
        for text in (nested(1000), nested(1000, "array"), '{"serials": ' + nested(65, "array") + "}",
                     "[" * 100_000):  # unbalanced: the parser would recurse just as deep
            response = getattr(client, method)(path, data=text, content_type="application/json", headers=headers)
            body = assert_error(response, 400, "bad_request")
            assert body["details"]["max_depth"] == MAX_DEPTH, (path, body)
            assert body["details"]["reason"]
    assert table_snapshot(db) == before


def test_json_at_the_depth_limit_still_parses(client, viewer):
    # 64 levels reach the schema (a 422 for the wrong shape), 65 do not
    deep_ok = '{"serials": ' + nested(MAX_DEPTH - 1, "array") + "}"
    assert_error(post_raw(client, "/api/executions/bulk", deep_ok, viewer), 422, "validation_error", field="serials.0")
    too_deep = '{"serials": ' + nested(MAX_DEPTH, "array") + "}"
    assert_error(post_raw(client, "/api/executions/bulk", too_deep, viewer), 400, "bad_request")
    # brackets inside strings are text, whatever the escapes around them
    text = '{"serials": ["' + "[" * 500 + '\\"' + "{" * 500 + '\\\\", "J20260001.0001"]}'
    response = post_raw(client, "/api/executions/bulk", text, viewer)
    assert response.status_code == 200, response.get_json()


# ---------------------------------------------------------------- dates

OUT_OF_RANGE = ["9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59+00:00", "2101-01-01T00:00:00Z",
                "0001-01-01T00:00:00+14:00", "1999-12-31T23:59:59Z"]


def test_out_of_range_dates_are_422(client, operator, make, db):
    target = make.target()
    job = client.post("/api/jobs", json={**JOB, "target_ids": [target["id"]]}, headers=operator).get_json()
    before = table_snapshot(db)
    for when in OUT_OF_RANGE:
        created = client.post("/api/jobs", json={**JOB, "target_ids": [target["id"]], "scheduled_at": when},
                              headers=operator)
        assert_error(created, 422, "validation_error", field="scheduled_at")
        patched = client.patch(f"/api/jobs/{job['id']}", json={"scheduled_at": when}, headers=operator)
        assert_error(patched, 422, "validation_error", field="scheduled_at")
    assert table_snapshot(db) == before
    # the edges of the range still work, and are kept in UTC
    last = client.post("/api/jobs", json={**JOB, "target_ids": [target["id"]],
                                          "scheduled_at": "2100-12-31T23:59:59-00:00"}, headers=operator)
    assert last.status_code == 201, last.get_json()
    shifted = client.post("/api/jobs", json={**JOB, "name": "shifted", "target_ids": [target["id"]],
                                             "scheduled_at": "2100-06-01T02:00:00+02:00"}, headers=operator)
    assert shifted.get_json()["scheduled_at"] == "2100-06-01T00:00:00Z"


# ---------------------------------------------------------------- secrets in 422s

SECRET = "Hunter2-Secret-Value"
SECRET_BODIES = [
    ("post", "/api/auth/login", {"username": "admin", "pasword": SECRET}),
    ("post", "/api/auth/login", {"username": SECRET, "password": ["not", "a", "string"]}),
    ("post", "/api/users", {"username": "u1", "passwrd": SECRET}),
    ("post", "/api/users", {"username": SECRET + "!", "password": "long-enough-1"}),  # bad username pattern
    ("patch", "/api/users/{user}", {"pasword": SECRET}),
    ("post", "/api/credentials", {"name": "c", "username": "u", "auth_type": "key", "privateKey": SECRET}),
    ("post", "/api/credentials", {"name": "c", "username": "u", "auth_type": "key", "private_key": "k",
                                  "passPhrase": SECRET}),
    ("post", "/api/credentials", {"name": "c", "username": "u", "auth_type": SECRET, "password": "p"}),
    ("patch", "/api/credentials/{credential}", {"secret": SECRET}),
]


def test_secret_bodies_never_echo_a_value(client, admin, users, make, db):
    users.create("someone", "viewer")
    user_id = next(u["id"] for u in client.get("/api/users", headers=admin).get_json()["data"]
                   if u["username"] == "someone")
    credential = make.credential()
    before = table_snapshot(db)
    for method, path, body in SECRET_BODIES:
        url = path.format(user=user_id, credential=credential["id"])
        headers = {} if url == "/api/auth/login" else admin
        response = getattr(client, method)(url, json=body, headers=headers)
        details = assert_error(response, 422, "validation_error")["details"]
        assert SECRET not in response.get_data(as_text=True), (url, body)
        assert "received" not in details and all("received" not in e for e in details["errors"]), details
    assert table_snapshot(db) == before


def test_ordinary_bodies_still_echo_what_they_rejected(client, admin, db):
    before = table_snapshot(db)
    body = assert_error(client.post("/api/targets", json={"name": "t", "connection": "telnet"}, headers=admin), 422)
    assert body["details"]["received"] == "telnet"
    # but a huge rejected value does not travel back whole
    response = client.post("/api/targets", json={"name": "t", "connection": "local", "tags": ["x" * 900_000]},
                           headers=admin)
    body = assert_error(response, 422, "validation_error", field="tags.0")
    assert len(response.get_data()) < 2_000
    assert table_snapshot(db) == before


# ---------------------------------------------------------------- target fields

LOOSE_TARGET_FIELDS = [
    ({"ip_address": "fe80::1%$(id)"}, "ip_address"),
    ({"ip_address": "fe80::1%eth0;reboot"}, "ip_address"),
    ({"ip_address": "fe80::1%"}, "ip_address"),
    ({"port": True}, "port"),
    ({"port": "22"}, "port"),
    ({"port": 22.5}, "port"),
    ({"tags": ["x" * 900_000]}, "tags.0"),
    ({"tags": ["x" * 65]}, "tags.0"),
    ({"tags": ["ok", ""]}, "tags.1"),
    ({"tags": ["has space"]}, "tags.0"),
    ({"tags": ["$(id)"]}, "tags.0"),
    ({"tags": [f"t{i}" for i in range(51)]}, "tags"),
    ({"hostname": "999.1.1.1"}, "hostname"),
    ({"hostname": "a" * 64 + ".example.com"}, "hostname"),
    ({"hostname": "-lead.example.com"}, "hostname"),
    ({"credential_id": True}, "credential_id"),
    ({"credential_id": "1"}, "credential_id"),
]


def test_loose_target_fields_are_422(client, admin, make, db):
    cred = make.credential()
    target = make.target(credential_id=cred["id"])
    before = table_snapshot(db)
    for overrides, field in LOOSE_TARGET_FIELDS:
        body = {"name": "loose", "ip_address": "10.0.0.1", "credential_id": cred["id"], **overrides}
        assert_error(client.post("/api/targets", json=body, headers=admin), 422, "validation_error", field=field)
        assert_error(client.patch(f"/api/targets/{target['id']}", json=overrides, headers=admin), 422,
                     "validation_error", field=field)
    assert table_snapshot(db) == before
    # real values still pass
    body = client.post("/api/targets", json={
        "name": "strict", "ip_address": "fe80::1%eth0.100", "port": 65535, "credential_id": cred["id"],
        "tags": ["env=prod", "k8s:ns/app", "a_b.c-d", "x" * 64, *[f"t{i}" for i in range(46)]]}, headers=admin)
    assert body.status_code == 201, body.get_json()
    for ids in ([True], ["1"], [1.5]):  # ids are JSON integers, never coerced
        job = {"name": "j", "target_ids": [body.get_json()["id"], *ids], "actions": [
            {"action_type": "command", "action_name": "a", "action_parameters": {"command": "true"}}]}
        assert_error(client.post("/api/jobs", json=job, headers=admin), 422, "validation_error", field="target_ids.1")
    assert body.get_json()["ip_address"] == "fe80::1%eth0.100" and body.get_json()["port"] == 65535
    named = client.post("/api/targets", json={"name": "named", "hostname": "db-1.internal.example",
                                              "credential_id": cred["id"], "port": 1}, headers=admin)
    assert named.status_code == 201, named.get_json()


# ---------------------------------------------------------------- real servers

def _procfile_worker_class() -> str:
    """The web process's gunicorn worker class, as deployed."""
    match = re.search(r"--worker-class\s+(\S+)", (REPO / "Procfile").read_text())
    assert match, "the Procfile's web line names no --worker-class"
    return match.group(1)


def _up(url: str, proc=None) -> bool:
    if proc is not None:
        assert proc.running(), f"server exited at start-up\n{proc.logs()}"
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module", params=["embedded", "gunicorn"])
def port(request, tmp_path_factory) -> Iterator[int]:
    """A running server's port: `opsconductor.standalone` in this process, or gunicorn with the Procfile's
    worker class against PostgreSQL and Redis."""
    tmp = tmp_path_factory.mktemp(f"hostile-{request.param}")
    if request.param == "embedded":
        from opsconductor.standalone import build

        settings = make_settings(f"sqlite:///{tmp / 'opsconductor.db'}", embedded=True, var_dir=str(tmp),
                                 admin_username=ADMIN, admin_password=PASSWORD,
                                 rate_limit_login="1000 per minute")
        embedded = build(settings).start("127.0.0.1", 0)
        threads = list(embedded._threads)
        try:
            wait_until(lambda: _up(f"http://127.0.0.1:{embedded.port}/healthz"), timeout=30, interval=0.05,
                       message="the embedded server")
            yield embedded.port
        finally:
            embedded.stop()
            for thread in threads:  # a worker left running would take the next in-process instance's tasks
                thread.join(timeout=15)
        return
    redis_url = request.getfixturevalue("redis_url")
    processes = Processes(tmp)
    with scratch_database("opsc_hostile") as database_url:
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "JWT_SECRET_KEY": JWT_SECRET,
               "OPSCONDUCTOR_SECRET_KEY": FERNET_SECRET, "OPSCONDUCTOR_EMBEDDED": "0",
               "OPSCONDUCTOR_ADMIN_USERNAME": ADMIN, "OPSCONDUCTOR_ADMIN_PASSWORD": PASSWORD,
               "RATE_LIMIT_LOGIN": "1000 per minute", "PYTHONUNBUFFERED": "1"}
        env.pop("OPSCONDUCTOR_SKIP_MIGRATE", None)
        number = free_port()
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        argv = [gunicorn, "api.wsgi:app", "--bind", f"127.0.0.1:{number}", "--worker-class", _procfile_worker_class(),
                "--workers", "1", "--threads", "8", "--graceful-timeout", "2"]
        proc = processes.start("gunicorn", argv, cwd=REPO, env=env)
        try:
            wait_until(lambda: _up(f"http://127.0.0.1:{number}/healthz", proc), timeout=60, interval=0.05,
                       message="gunicorn")
            yield number
        finally:
            processes.stop_all()


def raw_exchange(port: int, head: bytes, chunks: Iterable[bytes] = ()) -> tuple[int, str, str]:
    """Send raw bytes, read one HTTP response: (status, content type, body). A server may stop
    reading once it has answered, so a failed send still leaves its answer to read."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
    return response.status, response.getheader("Content-Type", ""), body.decode(errors="replace")


def _assert_envelope(status: int, content_type: str, text: str, expected: int, error: str) -> dict:
    assert (status, content_type.split(";")[0]) == (expected, "application/json"), (status, content_type, text)
    body = json.loads(text)
    assert set(body) == {"error", "message", "details"} and body["error"] == error, body
    assert isinstance(body["message"], str) and body["message"] and isinstance(body["details"], dict)
    return body


@pytest.mark.slow
@pytest.mark.parametrize("headers", [b"X-Big: " + b"a" * 100_000 + b"\r\n",
                                     b"".join(b"X-H%d: v\r\n" % i for i in range(300))], ids=["100KB", "300headers"])
def test_oversized_headers_are_a_431_envelope(port, headers):
    head = b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n"
    _assert_envelope(*raw_exchange(port, head), 431, "request_header_fields_too_large")


def _chunked_login(port: int, size: int) -> tuple[int, str, str]:
    """POST a login body of exactly `size` bytes, chunked (no Content-Length)."""
    prefix, suffix = b'{"username": "', b'", "password": "x"}'
    body = prefix + b"u" * (size - len(prefix) - len(suffix)) + suffix
    head = (b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    step = 64 * 1024
    chunks = (b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step]) for i in range(0, len(body), step))
    return raw_exchange(port, head, [*chunks, b"0\r\n\r\n"])


@pytest.mark.slow
def test_a_chunked_body_past_the_cap_is_a_413(port):
    body = _assert_envelope(*_chunked_login(port, int(1.3 * MAX_BODY)), 413, "payload_too_large")
    assert body["details"]["max_bytes"] == MAX_BODY
    # one byte past the cap is too much; the cap itself is not (a 422: the username is too long)
    _assert_envelope(*_chunked_login(port, MAX_BODY + 1), 413, "payload_too_large")
    _assert_envelope(*_chunked_login(port, MAX_BODY), 422, "validation_error")


# ---------------------------------------------------------------- WebSocket before auth

def _ws_open(port: int) -> socket.socket:
    """A raw WebSocket on /ws/executions, without a token and without compression."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=8)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/executions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing of the first frame is consumed here
        assert chunk, f"closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _frame_header(length: int) -> bytes:
    """A client text frame's header (FIN, masked with a zero key, so the payload goes as is)."""
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 65536:
        size = bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        size = bytes([0x80 | 127]) + struct.pack("!Q", length)
    return b"\x81" + size + b"\0\0\0\0"


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One server frame: (opcode, payload). Anything not a WebSocket frame (an HTTP response written
    into the upgraded socket) fails."""
    first, second = _recv_exactly(sock, 2)
    assert first & 0x70 == 0 and first & 0x80, f"not a WebSocket frame: {bytes([first, second])!r}"
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", _recv_exactly(sock, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", _recv_exactly(sock, 8))[0]
    return first & 0x0F, _recv_exactly(sock, length)


def _next(sock: socket.socket, opcode: int) -> bytes:
    """The payload of the next frame of this kind (pings are skipped)."""
    while True:
        kind, payload = _read_frame(sock)
        if kind == opcode:
            return payload
        assert kind in (0x9, 0xA), f"unexpected frame {kind:#x}: {payload[:200]!r}"


def _close_code(sock: socket.socket) -> int:
    return struct.unpack("!H", _next(sock, 0x8)[:2])[0]


@pytest.mark.slow
def test_a_huge_frame_before_auth_is_closed_1009_unread(port):
    sock = _ws_open(port)
    try:
        # a 32 MiB frame of which only 64 KiB ever come: the close must not wait for the rest
        sock.sendall(_frame_header(32 * 1024 * 1024) + b"a" * 64 * 1024)
        assert _close_code(sock) == 1009
    finally:
        sock.close()
    # an auth message under the cap still authenticates
    login = httpx.post(f"http://127.0.0.1:{port}/api/auth/login", json={"username": ADMIN, "password": PASSWORD},
                       timeout=10)
    assert login.status_code == 200, login.text
    sock = _ws_open(port)
    try:
        message = json.dumps({"action": "auth", "token": login.json()["access_token"], "pad": "p" * 8000}).encode()
        sock.sendall(_frame_header(len(message)) + message)
        assert json.loads(_next(sock, 0x1))["type"] == "subscribed"
    finally:
        sock.close()


@pytest.mark.slow
def test_a_deep_first_message_is_closed_1008(port):
    sock = _ws_open(port)
    try:
        message = ('{"action": "auth", "token": ' + nested(1000, "array") + "}").encode()
        sock.sendall(_frame_header(len(message)) + message)
        assert _close_code(sock) == 1008
    finally:
        sock.close()
