"""execution_completed is relayed after its branches' branch_completed events."""
from api.ws import OrderedRelay


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _branch(serial, n):
    return {"type": "branch_completed", "data": {"execution_serial": serial, "branch_serial": f"{serial}.{n:04d}"}}


def _done(serial, count):
    return {"type": "execution_completed", "data": {"execution_serial": serial, "branch_count": count}}


def test_execution_completed_waits_for_late_branch_events():
    sent, clock = [], Clock()
    relay = OrderedRelay(sent.append, hold_seconds=1.0, clock=clock)
    relay.push(_branch("J20260001.0001", 1))
    relay.push(_done("J20260001.0001", 2))
    assert [e["type"] for e in sent] == ["branch_completed"]
    relay.push(_branch("J20260001.0001", 2))
    assert [e["type"] for e in sent] == ["branch_completed", "branch_completed", "execution_completed"]


def test_in_order_events_pass_straight_through():
    sent = []
    relay = OrderedRelay(sent.append)
    relay.push({"type": "execution_started", "data": {"execution_serial": "J20260001.0001"}})
    relay.push(_branch("J20260001.0001", 1))
    relay.push(_done("J20260001.0001", 1))
    assert [e["type"] for e in sent] == ["execution_started", "branch_completed", "execution_completed"]
    assert relay.next_due() is None


def test_held_event_is_released_after_the_hold_time():
    sent, clock = [], Clock()
    relay = OrderedRelay(sent.append, hold_seconds=1.0, clock=clock)
    relay.push(_done("J20260001.0002", 3))  # a monitor that joined mid-execution
    relay.flush_due()
    assert sent == []
    assert relay.next_due() == 101.0
    clock.now = 101.0
    relay.flush_due()
    assert [e["type"] for e in sent] == ["execution_completed"]
