"""The SSH connection pool: open, authenticated transports kept per target and identity, so the
next branch on the same target in this worker process skips TCP, key exchange and auth (the
dominant cost of a short action)."""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

import paramiko

from .base import ConnectionSpec
from .ssh_keys import secret_digest

logger = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 60.0


PoolKey = tuple[str, int, str, str, str, str]  # host, port, user, credential version, pin, secret digest


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
            secret_digest(spec),
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
