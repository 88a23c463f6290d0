"""SeqRelay: each execution's events once, in seq order; gaps filled from the log."""
from api.ws import SeqRelay

SERIAL = "J20260001.0001"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _event(seq, kind="branch_completed", serial=SERIAL):
    return {"type": kind, "data": {"execution_serial": serial, "seq": seq}}


class Log:
    """The event log as the relay reads it: every event with seq > after."""

    def __init__(self, events):
        self.events = events
        self.reads = 0

    def __call__(self, serial, after):
        self.reads += 1
        return [e for e in self.events if e["data"]["execution_serial"] == serial and e["data"]["seq"] > after]


def _seqs(sent):
    return [e["data"].get("seq") for e in sent]


def test_in_order_events_pass_straight_through_without_reading_the_log():
    sent, log = [], Log([])
    relay = SeqRelay(sent.append, log)
    for seq in (1, 2, 3):
        relay.push(_event(seq))
    assert _seqs(sent) == [1, 2, 3] and log.reads == 0
    assert relay.next_due() is None


def test_an_event_ahead_waits_for_the_one_before_it():
    sent, clock = [], Clock()
    relay = SeqRelay(sent.append, Log([]), gap_wait=0.1, clock=clock)
    relay.push(_event(1))
    relay.push(_event(3))
    assert _seqs(sent) == [1]
    assert relay.next_due() == 100.1
    relay.push(_event(2))
    assert _seqs(sent) == [1, 2, 3] and relay.next_due() is None


def test_a_gap_that_outlives_the_wait_is_read_from_the_log():
    sent, clock = [], Clock()
    log = Log([_event(n) for n in range(1, 6)])
    relay = SeqRelay(sent.append, log, gap_wait=0.1, clock=clock)
    relay.push(_event(1))
    relay.push(_event(5))
    relay.flush_due()
    assert _seqs(sent) == [1] and log.reads == 0
    clock.now += 0.15
    relay.flush_due()
    assert _seqs(sent) == [1, 2, 3, 4, 5] and log.reads == 1


def test_duplicates_are_dropped_also_after_the_execution_completed():
    sent, clock = [], Clock()
    relay = SeqRelay(sent.append, Log([]), clock=clock)
    relay.push(_event(1))
    relay.push(_event(1))
    relay.push(_event(2, "execution_completed"))
    relay.push(_event(1))  # a late copy, after the end
    assert _seqs(sent) == [1, 2]
    assert relay.positions() == {}
    clock.now += SeqRelay.FORGET_DONE_SECONDS
    relay.flush_due()  # forgotten after a minute: memory stays bounded on a long-lived socket


def test_resume_replays_only_what_came_after_since():
    sent = []
    log = Log([_event(n) for n in range(1, 8)])
    relay = SeqRelay(sent.append, log)
    relay.start_at(SERIAL, 4)
    relay.catch_up(SERIAL)
    relay.push(_event(6))  # live copies of replayed events are not sent again
    relay.push(_event(8))
    assert _seqs(sent) == [5, 6, 7, 8]


def test_resync_reads_what_a_lost_publish_never_brought():
    sent = []
    log = Log([_event(1), _event(2), _event(3, "execution_completed")])
    relay = SeqRelay(sent.append, log)
    relay.push(_event(1))
    relay.resync()
    assert _seqs(sent) == [1, 2, 3] and relay.positions() == {}


def test_executions_are_ordered_independently():
    sent = []
    relay = SeqRelay(sent.append, Log([]))
    other = "J20260001.0002"
    relay.push(_event(7, serial=other))  # first seen mid-way: watched from there
    relay.push(_event(1))
    relay.push(_event(8, serial=other))
    assert [(e["data"]["execution_serial"], e["data"]["seq"]) for e in sent] == [
        (other, 7), (SERIAL, 1), (other, 8)]


def test_events_without_seq_pass_through():
    sent = []
    relay = SeqRelay(sent.append, Log([]))
    output = {"type": "branch_output", "data": {"execution_serial": SERIAL, "offset": 0, "data": "hi"}}
    relay.push(output)
    assert sent == [output]


def test_a_gap_missing_from_the_log_is_skipped_not_waited_on_forever():
    sent, clock = [], Clock()
    relay = SeqRelay(sent.append, Log([]), gap_wait=0.1, clock=clock)
    relay.push(_event(1))
    relay.push(_event(4))
    clock.now += 0.2
    relay.flush_due()
    assert _seqs(sent) == [1, 4] and relay.next_due() is None


def test_the_bus_gives_branch_output_only_to_subscriptions_that_ask():
    from common.events import LocalEventBus

    bus = LocalEventBus()
    with bus.subscribe() as plain, bus.subscribe(include_output=True) as watching:
        bus.publish_many([("branch_output", {"execution_serial": SERIAL, "offset": 0, "data": "x"}),
                          ("branch_completed", {"execution_serial": SERIAL, "seq": 1})])
        assert [plain.get(0)["type"], plain.get(0)] == ["branch_completed", None]
        assert [watching.get(0)["type"], watching.get(0)["type"]] == ["branch_output", "branch_completed"]


def test_a_hole_in_the_log_ends_the_catch_up_instead_of_reading_it_forever():
    sent = []
    log = Log([_event(n) for n in range(1001, 2001)])  # 1..1000 pruned, a full page after the hole
    relay = SeqRelay(sent.append, log)
    relay.start_at(SERIAL, 0)
    relay.catch_up(SERIAL)
    assert log.reads == 2 and _seqs(sent) == list(range(1001, 2001))


def test_an_unreadable_log_is_tried_again_a_second_later_not_in_a_loop():
    sent, clock = [], Clock()

    def unreadable(serial, after):
        unreadable.calls += 1
        raise ConnectionError("database away")
    unreadable.calls = 0

    relay = SeqRelay(sent.append, unreadable, gap_wait=0.1, clock=clock)
    relay.push(_event(1))
    relay.push(_event(3))
    clock.now += 0.2
    relay.flush_due()
    relay.flush_due()
    assert unreadable.calls == 1 and relay.next_due() >= clock.now + 0.9


def test_an_execution_gone_quiet_is_checked_although_others_are_busy():
    sent, clock = [], Clock()
    log = Log([_event(1), _event(2, "execution_completed")])
    relay = SeqRelay(sent.append, log, clock=clock)
    relay.push(_event(1))  # its execution_completed publish is lost
    for seq in range(1, 11):  # while another execution keeps the socket busy
        clock.now += 1.0
        relay.push(_event(seq, serial="J20260001.0002"))
        relay.check_quiet(5.0)
    mine = [(e["type"], e["data"]["seq"]) for e in sent if e["data"]["execution_serial"] == SERIAL]
    assert mine == [("branch_completed", 1), ("execution_completed", 2)]


def test_a_subscription_far_behind_skips_output_but_never_numbered_events():
    from common.events import OUTPUT_BACKLOG, LocalEventBus

    bus = LocalEventBus()
    with bus.subscribe(include_output=True) as slow:
        chunks = [("branch_output", {"execution_serial": SERIAL, "offset": n, "data": "x"})
                  for n in range(OUTPUT_BACKLOG + 10)]
        bus.publish_many(chunks + [("branch_completed", {"execution_serial": SERIAL, "seq": 1})])
        received = slow.get_many(timeout=0, limit=10_000)
        assert len(received) == OUTPUT_BACKLOG + 1 and slow.output_skipped == 10
        assert received[-1]["type"] == "branch_completed"
