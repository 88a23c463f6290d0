"""Secrets out of command output: every occurrence of a secret value becomes `****` before the output
is stored, published or logged.

Output arrives in chunks cut wherever a read happened to end, so a secret may be split across two of
them. `StreamMasker` holds back the end of what it has seen when it could be the start of a secret
(at most len(longest secret) - 1 bytes), and releases it once the next chunk (or the end of the
stream) decides. Its output is exactly what masking the whole stream at once would give. Values
are matched as bytes (their UTF-8), whatever the output's encoding.

Any non-empty secret is masked, however short: a one-character password masks that character
everywhere in the output. Short secrets therefore mask aggressively; that is the price of never
showing one."""
from __future__ import annotations

import re
from collections.abc import Iterable

MASK = b"****"


def _encoded(secrets: Iterable[str]) -> list[bytes]:
    """The distinct non-empty values as bytes, longest first: where two secrets start at the same byte,
    the longer one is masked whole."""
    values = {s.encode("utf-8", "surrogateescape") for s in secrets if s}
    return sorted(values, key=lambda v: (-len(v), v))


def _pattern(values: list[bytes]) -> re.Pattern[bytes] | None:
    return re.compile(b"|".join(re.escape(v) for v in values)) if values else None


class StreamMasker:
    """Masks one output stream fed in arbitrary chunks. Holds back only bytes that could still be the
    start of a secret (a proper prefix of one, at the end of what was seen), so at most
    len(longest secret) - 1 bytes, and usually none: a line goes out whole once its newline arrives."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._values = _encoded(secrets)
        self._pattern = _pattern(self._values)
        self._firsts = {value[0] for value in self._values}
        self._hold = len(self._values[0]) - 1 if self._values else 0
        self._pending = b""

    @property
    def active(self) -> bool:
        """Whether there is anything to mask at all (no secrets: every chunk passes through as is)."""
        return self._pattern is not None

    def feed(self, data: bytes) -> bytes:
        """The masked bytes that are now certain; the rest waits for the next chunk or `flush`."""
        if self._pattern is None:
            return data
        buf = self._pending + data
        undecided = self._undecided(buf)
        # A match starting before `undecided` is final: a longer secret starting at the same byte would
        # have to continue past the end of `buf`, and its start would then be undecided.
        out = bytearray()
        cursor = 0
        for match in self._pattern.finditer(buf):
            if match.start() >= undecided:
                break
            out += buf[cursor:match.start()] + MASK
            cursor = match.end()
        end = max(cursor, undecided)
        out += buf[cursor:end]
        self._pending = buf[end:]
        return bytes(out)

    def _undecided(self, buf: bytes) -> int:
        """The first position from which the rest of `buf` is a proper prefix of a secret (len(buf): none)."""
        for i in range(max(0, len(buf) - self._hold), len(buf)):
            if buf[i] in self._firsts:
                rest = buf[i:]
                if any(len(value) > len(rest) and value.startswith(rest) for value in self._values):
                    return i
        return len(buf)

    @property
    def pending(self) -> bytes:
        """What is held back: a possible secret's start, unmasked."""
        return self._pending

    def flush(self) -> bytes:
        """The end of the stream: what was held back, masked."""
        rest, self._pending = self._pending, b""
        return self.mask(rest)

    def mask(self, data: bytes) -> bytes:
        """Mask a complete piece of text on its own (the worker's own messages), leaving the stream alone."""
        return data if self._pattern is None or not data else self._pattern.sub(MASK, data)


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `****`."""
    pattern = _pattern(_encoded(secrets))
    if pattern is None:
        return text
    return pattern.sub(MASK, text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
