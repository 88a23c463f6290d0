"""Bring the Procfile stack (web, worker, beat) up with honcho on a fresh PostgreSQL database and
its own Redis database, for benchmarks. Torn down whole (process group) on exit."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg2
import redis

from tests.processes import descendants

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
ADMIN = ("bench-admin", "bench-admin-password")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


class Stack:
    def __init__(self, *, redis_db: int = 12, env: dict[str, str] | None = None, database: str | None = None,
                 workers: int = 1):
        self.db_name = database or f"opsc_bench_{uuid.uuid4().hex[:8]}"
        self.own_db = database is None
        self.redis_url = f"redis://127.0.0.1:6379/{redis_db}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "DATABASE_URL": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{self.db_name}",
            "REDIS_URL": self.redis_url,
            "JWT_SECRET_KEY": "bench-jwt-" + "k" * 40,
            "OPSCONDUCTOR_SECRET_KEY": "bench-fernet-" + "s" * 40,
            "OPSCONDUCTOR_ADMIN_USERNAME": ADMIN[0],
            "OPSCONDUCTOR_ADMIN_PASSWORD": ADMIN[1],
            "RATE_LIMIT_ADMIN": "1000000 per minute",
            "PORT": str(self.port),
            **(env or {}),
        }
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.http: httpx.Client | None = None
        self.log = None
        self.token = ""

    def __enter__(self) -> Stack:
        try:
            return self._start()
        except BaseException:
            self.__exit__(None, None, None)  # a failed start leaves no stack, database or log behind
            raise

    def _start(self) -> Stack:
        if self.own_db:
            _pg(f"CREATE DATABASE {self.db_name}")
        redis.Redis.from_url(self.redis_url).flushdb()
        self.log = open(f"/tmp/{self.db_name}.log", "w")
        self.proc = subprocess.Popen([str(BIN / "honcho"), "-f", "Procfile", "start", "-c", f"worker={self.workers}"],
                                     cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"stack exited; see {self.log.name}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"stack not ready in 60 s; see {self.log.name}")
        login = httpx.post(self.base + "/api/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        login.raise_for_status()
        self.token = login.json()["access_token"]
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            # every process of the stack, not just honcho's group: a worker left behind would go on
            # taking the next run's tasks from Redis database 12 and fail to claim them in its own database
            tree = descendants(self.proc.pid)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
            for pid in descendants(self.proc.pid) + tree:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.http is not None:
            self.http.close()
        if getattr(self, "log", None) is not None:
            self.log.close()
        if self.own_db:
            _pg(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")

    def post(self, path: str, body: dict | None = None) -> dict:
        response = self.http.post(path, json=body) if body is not None else self.http.post(path)
        if response.status_code >= 400:
            raise RuntimeError(f"POST {path} -> {response.status_code} {response.text}")
        return response.json()
