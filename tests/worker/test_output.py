"""Unit tests for head+tail output capping (pure logic)."""
from __future__ import annotations

import random

import pytest

from common.output import DEFAULT_OUTPUT_CAP, TRUNCATION_MARKER, OutputCollector


def feed_chunks(collector: OutputCollector, data: bytes, seed: int = 0) -> None:
    """Feed in random chunk sizes: results must not depend on how the stream was split."""
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 2, 3, 7, 64, 1000, 4096, 65536])
        collector.feed(data[pos : pos + size])
        pos += size


def marker(n: int) -> str:
    return TRUNCATION_MARKER.format(n=n)


def test_default_cap_is_one_mib() -> None:
    assert DEFAULT_OUTPUT_CAP == 1024 * 1024
    assert OutputCollector().cap == DEFAULT_OUTPUT_CAP


def test_marker_text() -> None:
    assert marker(4194304) == "\n[... 4194304 bytes truncated by OpsConductor ...]\n"


def test_empty() -> None:
    c = OutputCollector(10)
    c.feed(b"")
    assert c.text() == ""
    assert not c.truncated and c.total_bytes == 0 and c.truncated_bytes == 0


@pytest.mark.parametrize("size", [0, 1, 9, 10])
def test_up_to_cap_is_kept_whole(size: int) -> None:
    data = bytes(range(65, 65 + size))
    c = OutputCollector(10)
    feed_chunks(c, data)
    assert c.text() == data.decode()
    assert not c.truncated
    assert c.total_bytes == size


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("cap,size", [(10, 11), (10, 1000), (11, 50), (1, 5), (1000, 123457)])
def test_over_cap_keeps_head_and_tail(cap: int, size: int, seed: int) -> None:
    data = bytes((i * 7 + 32) % 95 + 32 for i in range(size))  # printable ASCII
    c = OutputCollector(cap)
    feed_chunks(c, data, seed)
    head, tail = cap // 2, cap - cap // 2
    expected = data[:head].decode() + marker(size - cap) + data[size - tail :].decode()
    assert c.text() == expected
    assert c.truncated
    assert c.truncated_bytes == size - cap
    assert c.total_bytes == size


def test_zero_cap_keeps_nothing_but_counts() -> None:
    c = OutputCollector(0)
    c.feed(b"abc")
    assert c.text() == marker(3)
    assert c.total_bytes == 3


def test_negative_cap_rejected() -> None:
    with pytest.raises(ValueError):
        OutputCollector(-1)


def test_five_mib_capped_at_one_mib() -> None:
    c = OutputCollector()
    chunk = b"a" * 32768
    for _ in range(160):
        c.feed(chunk)
    text = c.text()
    half = 512 * 1024
    assert text == "a" * half + marker(4194304) + "a" * half


def test_multibyte_character_split_across_chunks() -> None:
    data = "héllo wörld €𝄞".encode()
    c = OutputCollector(1000)
    for i in range(len(data)):
        c.feed(data[i : i + 1])
    assert c.text() == "héllo wörld €𝄞"


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    c = OutputCollector(100)
    c.feed(b"ok \xff\xfe end \xc3")
    assert c.text() == "ok \ufffd\ufffd end \ufffd"


def test_truncation_cuts_at_character_boundaries() -> None:
    # 3-byte characters: a byte cut would leave half characters on both sides of the marker.
    data = "€" * 100  # 300 bytes
    c = OutputCollector(10)  # head 5 bytes (1 full € + 2 stray), tail 5 bytes (2 stray + 1 full)
    c.feed(data.encode())
    assert c.text() == "€" + marker(300 - 6) + "€"
    assert c.truncated_bytes == 294
    assert "\ufffd" not in c.text()


def test_invalid_bytes_around_cut_still_render() -> None:
    data = b"\xff" * 20
    c = OutputCollector(4)
    c.feed(data)
    text = c.text()
    assert text.startswith("\ufffd\ufffd") and text.endswith("\ufffd")
    # Each side renders what it kept; the marker counts exactly what was not shown.
    shown_tail = len(text.split(marker(c.truncated_bytes))[1])
    assert 2 + c.truncated_bytes + shown_tail == 20


def test_memory_stays_bounded() -> None:
    c = OutputCollector(1000)
    for _ in range(10000):
        c.feed(b"x" * 1000)
    assert len(c._head) + len(c._tail) == 1000
    assert c.total_bytes == 10_000_000
