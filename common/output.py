"""Bounded capture of a command's output stream.

A runaway command (``yes``, a verbose build, ``cat`` of a huge log) must not exhaust the
worker's memory or bloat the result row, yet the start *and* the end of the output are what an
operator needs (how it began, how it failed). So each stream keeps at most ``cap`` bytes: the
first half and the last half, with a visible marker saying how much was dropped in between.
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_CAP = 1024 * 1024  # bytes per stream
TRUNCATION_MARKER = "\n[... {n} bytes truncated by OpsConductor ...]\n"


def _decode(data: bytes | bytearray) -> str:
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _utf8_head_boundary(data: bytes | bytearray) -> int:
    """Length of ``data`` without a trailing, incomplete UTF-8 sequence.

    Cutting a stream mid-character would otherwise turn one valid character into a replacement
    character at the cut; moving the cut to a character boundary keeps valid text intact.
    """
    n = len(data)
    # A UTF-8 sequence is at most 4 bytes: look back for its lead byte.
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b < 0x80:  # ASCII: everything up to here is complete
            return n
        if b >= 0xC0:  # lead byte: is its sequence complete?
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4 if b < 0xF8 else 1
            return n if back >= need else n - back
        # continuation byte: keep looking back
    return n  # only continuation bytes (invalid anyway): leave as is


def _utf8_tail_boundary(data: bytes | bytearray) -> int:
    """Offset past the stray continuation bytes (at most 3) a mid-character cut leaves behind."""
    i = 0
    while i < min(3, len(data)) and 0x80 <= data[i] < 0xC0:
        i += 1
    return i


class OutputCollector:
    """Streaming head+tail collector for one output stream (stdout or stderr).

    ``feed()`` may be called with arbitrarily split chunks; nothing is decoded until ``text()``
    so multi-byte characters split across chunks decode correctly.
    """

    def __init__(self, cap: int = DEFAULT_OUTPUT_CAP) -> None:
        if cap < 0:
            raise ValueError("cap must be >= 0")
        self.cap = cap
        self._head_cap = cap // 2
        self._tail_cap = cap - self._head_cap
        self._head = bytearray()
        self._tail = bytearray()
        self.total_bytes = 0

    def feed(self, data: bytes) -> None:
        """Account for ``data``; memory stays bounded by ``cap`` whatever the volume."""
        if not data:
            return
        self.total_bytes += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
            if not data:
                return
        if len(data) >= self._tail_cap:
            self._tail = bytearray(data[len(data) - self._tail_cap :]) if self._tail_cap else bytearray()
            return
        self._tail += data
        excess = len(self._tail) - self._tail_cap
        if excess > 0:
            del self._tail[:excess]  # amortised O(1) for bytearray front deletion

    @property
    def truncated(self) -> bool:
        return self.total_bytes > self.cap

    @property
    def truncated_bytes(self) -> int:
        """Bytes dropped from the middle (after moving the cuts to character boundaries)."""
        if not self.truncated:
            return 0
        head, tail = self._cut()
        return self.total_bytes - len(head) - len(tail)

    def _cut(self) -> tuple[bytes, bytes]:
        head = bytes(self._head[: _utf8_head_boundary(self._head)])
        tail = bytes(self._tail[_utf8_tail_boundary(self._tail) :])
        return head, tail

    def text(self) -> str:
        """Decoded output; invalid UTF-8 and NUL (which PostgreSQL text cannot hold) become U+FFFD
        instead of failing the action."""
        if not self.truncated:
            return _decode(bytes(self._head) + bytes(self._tail))
        head, tail = self._cut()
        dropped = self.total_bytes - len(head) - len(tail)
        return _decode(head) + TRUNCATION_MARKER.format(n=dropped) + _decode(tail)
