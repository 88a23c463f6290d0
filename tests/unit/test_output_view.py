"""Reading a stream from an offset (common/output.py OutputView): live from the kept head and tail, or
from the stored result, in the same offsets; and the in-memory store of the embedded default."""
from __future__ import annotations

import random

import pytest

from common import live_output
from common.live_output import LocalOutputStore
from common.output import TRUNCATION_MARKER, OutputCollector, OutputView


def _collected(data: bytes, cap: int) -> OutputCollector:
    collector = OutputCollector(cap)
    for start in range(0, len(data), 7):
        collector.feed(data[start:start + 7])
    return collector


def _live(collector: OutputCollector) -> OutputView:
    head, tail = collector.parts()
    return OutputView(head, tail, collector.total_bytes)


def test_a_stream_within_the_cap_reads_from_any_offset():
    view = OutputView.of_stored("hello\nworld\n")
    assert (view.read(0).data, view.read(0).next_offset, view.read(0).truncated) == ("hello\nworld\n", 12, False)
    assert view.read(6).data == "world\n" and view.read(6).offset == 6
    assert (view.read(12).data, view.read(12).offset) == ("", 12)
    assert (view.read(99).data, view.read(99).offset, view.read(99).next_offset) == ("", 12, 12)


def test_a_capped_stream_reads_head_marker_tail_and_skips_what_was_dropped():
    collector = _collected(b"0123456789abcdefghij", cap=10)
    view = _live(collector)
    assert (view.head, view.tail, view.total, view.tail_start) == (b"01234", b"fghij", 20, 15)
    whole = view.read(0)
    assert whole.data == "01234" + TRUNCATION_MARKER.format(n=10) + "fghij" == collector.text()
    assert (whole.next_offset, whole.truncated) == (20, True)
    dropped = view.read(7)  # asked for bytes the cap dropped: the text starts at the first kept one after them
    assert (dropped.offset, dropped.data, dropped.truncated) == (15, "fghij", True)
    assert (view.read(17).offset, view.read(17).data, view.read(17).truncated) == (17, "hij", False)


def test_empty_and_missing_stored_results_read_as_nothing():
    for stored in (None, ""):
        piece = OutputView.of_stored(stored).read(0)
        assert (piece.offset, piece.data, piece.next_offset, piece.truncated) == (0, "", 0, False)


@pytest.mark.parametrize("seed", range(30))
def test_the_stored_result_reads_in_the_offsets_of_the_live_stream(seed):
    rng = random.Random(seed)
    cap = rng.choice([0, 10, 64, 1000])
    data = bytes(rng.choice(b"abc \n") for _ in range(rng.randint(0, 3000)))
    collector = _collected(data, cap)
    live, stored = _live(collector), OutputView.of_stored(collector.text())
    assert stored == live
    for offset in [0, 1, cap // 2, len(data) // 2, len(data) - 1, len(data), len(data) + 5]:
        assert stored.read(max(offset, 0)) == live.read(max(offset, 0))


def test_multibyte_text_keeps_its_offsets():
    text = "äöü✓ ok\n"
    view = OutputView.of_stored(text)
    assert view.total == len(text.encode())
    assert view.read(len("äö".encode())).data == "ü✓ ok\n"


def test_the_local_store_keeps_head_and_tail_and_forgets_finished_branches(monkeypatch):
    store = LocalOutputStore(cap=10)
    assert store.view("J20260001.0001.0001", "stdout") is None
    store.append("J20260001.0001.0001", "stdout", 0, b"0123456789")
    store.append("J20260001.0001.0001", "stdout", 10, b"abcdefghij")
    store.append("J20260001.0001.0001", "stderr", 0, b"oops\n")
    view = store.view("J20260001.0001.0001", "stdout")
    assert view == OutputView(b"01234", b"fghij", 20)
    assert store.view("J20260001.0001.0001", "stderr") == OutputView(b"oops\n", b"", 5)

    clock = [1000.0]
    monkeypatch.setattr(live_output.time, "monotonic", lambda: clock[0])
    store.finish("J20260001.0001.0001")
    assert store.view("J20260001.0001.0001", "stdout") is not None  # a reader that saw it running still finds it
    clock[0] += live_output.FINISHED_TTL + 1
    store.finish("J20260001.0001.0002")  # finishing another branch forgets the expired ones
    assert store.view("J20260001.0001.0001", "stdout") is None
    assert store.view("J20260001.0001.0001", "stderr") is None
