"""The machine's RabbitMQ (127.0.0.1:5672) as a test broker: each run gets a virtual host and a user of its
own, made and removed with rabbitmqctl, so parallel runs never share a queue and nothing is left behind."""
from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

HOST, PORT = "127.0.0.1", 5672
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run([RABBITMQCTL, "-q", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"rabbitmqctl {args[0]} failed: {result.stdout}{result.stderr}"
    return result.stdout


def answers() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=2):
            return True
    except OSError:
        return False


@contextmanager
def scratch_vhost(prefix: str = "opsc_test") -> Iterator[str]:
    """An amqp:// URL on a new virtual host, for a new user with a random password; both deleted afterwards
    (with every queue and message in the host)."""
    assert answers(), f"RabbitMQ is not listening on {HOST}:{PORT} (.ci/run starts it)"
    name = f"{prefix}_{secrets.token_hex(4)}"
    password = "p" + secrets.token_urlsafe(18)  # never "-…", which rabbitmqctl would take for an option
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("add_user", name, password)
        try:
            rabbitmqctl("set_permissions", "-p", name, name, ".*", ".*", ".*")
            yield f"amqp://{name}:{password}@{HOST}:{PORT}/{name}"
        finally:
            rabbitmqctl("delete_user", name)
    finally:
        rabbitmqctl("delete_vhost", name)


def queue_depths(vhost: str) -> dict[str, tuple[int, int]]:
    """{queue: (ready, unacknowledged)} in ``vhost``."""
    rows = rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name", "messages_ready",
                       "messages_unacknowledged")
    depths = {}
    for line in rows.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            depths[parts[0]] = (int(parts[1]), int(parts[2]))
    return depths
