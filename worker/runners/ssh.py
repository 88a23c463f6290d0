"""Run commands on remote targets over SSH (paramiko), with pooled, pinned connections.

Design points (each one exists because the naive version fails in production), and where they
live:

* ``ssh_connect``: host keys are never auto-added blindly: with no pinned key the presented key
  is accepted and reported (trust on first use, the caller pins it); with a pinned key any other
  key is refused. Timeouts are explicit at every phase (TCP connect, banner, key exchange, auth),
  and keepalives (SSH packets plus ``TCP_USER_TIMEOUT``) notice a link gone dark within about
  three intervals, not TCP's quarter of an hour.
* ``ssh_session``: every command is wrapped so the remote shell first prints its PID; timeout and
  cancel kill the remote process group through a second channel; both output streams are read in
  one loop and capped (head + tail) per stream.
* ``ssh_pool``: open, authenticated transports go back to an ``SSHPool`` so the next branch on
  the same target in this worker process skips TCP, key exchange and auth.
* ``ssh_keys``: private keys parsed once per credential (``KeyCache``); host key lines.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

from paramiko.ssh_exception import SSHException

from common.metrics import SSH_CONNECT_DURATION, error_type_label
from common.output import DEFAULT_OUTPUT_CAP

from .base import ConnectError, ConnectionSpec
from .ssh_connect import Connector
from .ssh_keys import KeyCache, host_key_line, load_private_key
from .ssh_pool import (
    DEFAULT_IDLE_TIMEOUT,
    PooledConnection,
    PoolKey,
    SSHPool,
    shared_pool,
)
from .ssh_session import SSHSession

__all__ = [
    "DEFAULT_IDLE_TIMEOUT", "DEFAULT_KEEPALIVE", "DEFAULT_KILL_GRACE", "KeyCache", "PoolKey", "PooledConnection",
    "SSHPool", "SSHRunner", "SSHSession", "host_key_line", "load_private_key", "shared_pool",
]

logger = logging.getLogger(__name__)

DEFAULT_KILL_GRACE = 2.0
DEFAULT_KEEPALIVE = 10.0


class SSHRunner:
    """Runner over SSH. Phase timeouts derive from ``spec.connect_timeout`` unless given here.

    ``keepalive``: seconds between SSH keepalives on an idle link (0 = off); a link that answers
    nothing for about three of them is given up, and a command running over it ends as
    ``connection_lost`` instead of waiting for its own timeout.
    """

    def __init__(
        self,
        *,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        pool: SSHPool | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
        banner_timeout: float | None = None,
        auth_timeout: float | None = None,
        channel_open_timeout: float = 10.0,
        keepalive: float = DEFAULT_KEEPALIVE,
    ) -> None:
        self.output_cap = output_cap
        self.pool = pool if pool is not None else shared_pool()
        self.kill_grace = kill_grace
        self.channel_open_timeout = channel_open_timeout
        self.keepalive = keepalive
        self.keys = KeyCache()
        self.connector = Connector(keys=self.keys, keepalive=keepalive, banner_timeout=banner_timeout,
                                   auth_timeout=auth_timeout)

    def timeouts(self, spec: ConnectionSpec) -> tuple[float, float, float]:
        """(banner, key exchange, auth) timeouts for ``spec``."""
        return self.connector.timeouts(spec.connect_timeout)

    def open(self, spec: ConnectionSpec) -> SSHSession:
        """Check out a pooled transport for ``spec`` or connect; raises ConnectError."""
        key = self.pool.key_for(spec)
        conn = self.pool.acquire(key)
        if conn is not None:
            logger.debug("reusing SSH transport to %s:%s", spec.host, spec.port)
            return SSHSession(self, spec, key, conn, reused=True)
        conn = self.connect(spec)
        if not spec.known_host_key:
            # trusted on first use: the caller pins this key, so the next branch's spec names it;
            # pool the transport under that pinned key, or the next branch could never reuse it
            key = self.pool.key_for(replace(spec, known_host_key=conn.host_key))
        return SSHSession(self, spec, key, conn, reused=False)

    def connect(self, spec: ConnectionSpec, *, within: float | None = None) -> PooledConnection:
        """A new authenticated transport, counted by the pool; raises ConnectError.
        ``within`` replaces ``spec.connect_timeout`` when part of it is spent already."""
        began = time.monotonic()
        try:
            conn = self.connector.connect(spec, within=within)
        except ConnectError as exc:
            SSH_CONNECT_DURATION.labels(error_type_label(exc.error_type)).observe(time.monotonic() - began)
            raise
        SSH_CONNECT_DURATION.labels("ok").observe(time.monotonic() - began)
        self.pool.note_connect(conn)
        return conn

    def kill_group(self, spec: ConnectionSpec, pid: int) -> str:
        """KILL the remote process group ``pid`` on ``spec``'s target, over a pooled transport or a
        new one; returns what happened, in words. Network and login failures are part of that
        answer, never raised: the caller is cleaning up after a lost worker and has nobody to
        raise to."""
        if pid <= 1:  # `kill -- -1` would signal every process the account may signal
            raise ValueError(f"not a process group to kill: {pid}")
        where = f"{spec.host}:{spec.port}"
        try:
            with self.open(spec) as session:
                return session.kill_group(pid)
        except ConnectError as exc:
            return f"could not reach {where} to kill remote process group {pid}: {exc.message}"
        except (SSHException, EOFError, OSError) as exc:  # the link died between two of its steps
            logger.warning("killing remote process group %s on %s failed", pid, where, exc_info=True)
            return f"could not reach {where} to kill remote process group {pid}: {type(exc).__name__}: {exc}"
