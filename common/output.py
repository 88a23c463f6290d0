"""Bounded capture of a command's output stream.

A runaway command (``yes``, a verbose build, ``cat`` of a huge log) must not exhaust the
worker's memory or bloat the result row, yet the start *and* the end of the output are what an
operator needs (how it began, how it failed). So each stream keeps at most ``cap`` bytes: the
first half and the last half, with a visible marker saying how much was dropped in between.

Shared by the worker (which captures) and the API (which reads a stream from an offset, live or
stored: `OutputView`), so both agree on what is kept and where each byte is.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_CAP = 1024 * 1024  # bytes per stream
TRUNCATION_MARKER = "\n[... {n} bytes truncated by OpsConductor ...]\n"


def decode_output(data: bytes | bytearray) -> str:
    """Output bytes as text: invalid UTF-8 and NUL (which PostgreSQL text cannot hold) become U+FFFD."""
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def utf8_complete_length(data: bytes | bytearray) -> int:
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
        head = bytes(self._head[: utf8_complete_length(self._head)])
        tail = bytes(self._tail[_utf8_tail_boundary(self._tail) :])
        return head, tail

    def text(self) -> str:
        """Decoded output; invalid UTF-8 and NUL (which PostgreSQL text cannot hold) become U+FFFD
        instead of failing the action."""
        if not self.truncated:
            return decode_output(bytes(self._head) + bytes(self._tail))
        head, tail = self._cut()
        dropped = self.total_bytes - len(head) - len(tail)
        return decode_output(head) + TRUNCATION_MARKER.format(n=dropped) + decode_output(tail)

    def parts(self) -> tuple[bytes, bytes]:
        """The kept head and tail as they came (no cut moved to a character boundary): the stream's
        first bytes, and its last ones, which end at `total_bytes`."""
        return bytes(self._head), bytes(self._tail)


# The marker as text() writes it; its count is what lets a reader put the tail back at its offsets.
_MARKER = re.compile(re.escape(TRUNCATION_MARKER).replace(r"\{n\}", r"([0-9]+)"))


@dataclass(frozen=True)
class OutputSlice:
    """What a read from an offset returns: `data` starts at byte `offset` of the stream (later than
    asked when the bytes asked for were dropped by the cap); `next_offset` is where to read on from."""

    offset: int
    data: str
    next_offset: int
    truncated: bool  # bytes from the offset asked for were dropped: skipped, or replaced by the marker


@dataclass(frozen=True)
class OutputView:
    """One stream as kept: `head` holds bytes [0, len(head)), `tail` the last bytes, up to `total`; what
    lies between them was dropped by the cap."""

    head: bytes
    tail: bytes
    total: int

    @property
    def tail_start(self) -> int:
        return self.total - len(self.tail)

    @classmethod
    def of_stored(cls, text: str | None) -> OutputView:
        """The view of a stored result (head, marker, tail, as OutputCollector.text() writes it). Offsets
        are exact for UTF-8 output; bytes that were not UTF-8 are stored as U+FFFD and count as its 3."""
        data = text or ""
        match = _MARKER.search(data)
        if match is None:
            encoded = data.encode("utf-8", "surrogatepass")
            return cls(encoded, b"", len(encoded))
        head = data[:match.start()].encode("utf-8", "surrogatepass")
        tail = data[match.end():].encode("utf-8", "surrogatepass")
        return cls(head, tail, len(head) + int(match.group(1)) + len(tail))

    def read(self, offset: int) -> OutputSlice:
        """The text from byte `offset` to the end (an offset past the end reads nothing, from the end)."""
        head, tail, start = self.head, self.tail, self.tail_start
        dropped = start - len(head)
        if offset < len(head):
            if dropped > 0:
                text = decode_output(head[offset:]) + TRUNCATION_MARKER.format(n=dropped) + decode_output(tail)
            else:
                text = decode_output(head[offset:] + tail[len(head) - start:])
            return OutputSlice(offset, text, self.total, dropped > 0)
        if offset < start:  # inside the dropped middle: on from the first byte kept after it
            return OutputSlice(start, decode_output(tail), self.total, True)
        offset = min(offset, self.total)
        return OutputSlice(offset, decode_output(tail[offset - start:]), self.total, False)
