"""The cutover window's hold (conductor/flow/window.py): the mirror's wait
is mirroring.wait's, replaced here by one that moves a fake clock."""

import datetime

import pytest

from cs2os_agent.conductor import schedule
from cs2os_agent.conductor.flow import mirroring
from cs2os_agent.conductor.flow import window

T0 = datetime.datetime(2030, 1, 1, 2, 0, tzinfo=datetime.timezone.utc)


class Ctx:
    def __init__(self, opens, ends, cutover="auto"):
        self.migration = {"options": {"cutover": cutover, "cutover_window": {
            "start": schedule.iso(opens), "end": schedule.iso(ends)}}}
        self.events = []
        self.results = {}

    def event(self, step, message):
        self.events.append(message)

    def result(self, **values):
        self.results.update(values)


@pytest.fixture
def clock(monkeypatch):
    """now() reads it; a wait moves it a minute per poll."""
    now = [T0]
    monkeypatch.setattr(schedule, "now", lambda: now[0])
    waits = []

    def wait(ctx, job, step, done, timeout):
        waits.append(step)
        while not done(ctx, None):
            now[0] += datetime.timedelta(minutes=1)
    monkeypatch.setattr(mirroring, "wait", wait)
    return now, waits


def _at(minutes):
    return T0 + datetime.timedelta(minutes=minutes)


def test_held_ready_until_the_window_opens_then_cut_over(clock):
    now, waits = clock
    ctx = Ctx(_at(10), _at(30))
    window.hold(ctx, job=None)
    assert now[0] == _at(10) and waits == ["ready"]
    assert ctx.events[0] == ("holding the mirror READY until the cutover "
                             "window opens at 2030-01-01T02:10:00Z (it "
                             "ends at 2030-01-01T02:30:00Z)")
    assert ctx.results["cutover_window"]["cutover_at"] == \
        "2030-01-01T02:10:00Z"


def test_inside_the_window_it_cuts_over_at_once(clock):
    now, waits = clock
    window.hold(Ctx(_at(-5), _at(30)), job=None)
    assert (now[0], waits) == (T0, [])


def test_a_window_past_when_ready_fails_naming_it(clock):
    with pytest.raises(window.CutoverWindowMissed) as caught:
        window.hold(Ctx(_at(-30), _at(-1)), job=None)
    assert str(caught.value) == (
        "the cutover window 2030-01-01T01:30:00Z to 2030-01-01T01:59:00Z "
        "ended at 2030-01-01T01:59:00Z before the mirror was READY; the "
        "CloudStack VM keeps running untouched")


def test_manual_waits_for_the_request_but_not_past_the_end(clock,
                                                           monkeypatch):
    now, waits = clock
    monkeypatch.setattr(mirroring, "cutover_requested", lambda ctx: False)
    with pytest.raises(window.CutoverWindowMissed) as caught:
        window.hold(Ctx(_at(1), _at(5), cutover="manual"), job=None)
    assert "before a cutover was requested" in str(caught.value)
    assert now[0] == _at(5) and waits == ["ready", "ready"]
    # Asked for inside the window: cut over then.
    now[0] = T0
    asked = [False, False, True]
    monkeypatch.setattr(mirroring, "cutover_requested",
                        lambda ctx: asked.pop(0) if asked else True)
    ctx = Ctx(_at(-1), _at(5), cutover="manual")
    window.hold(ctx, job=None)
    assert ctx.results["cutover_window"]["cutover_at"] < \
        "2030-01-01T02:05:00Z"


def test_no_window_no_hold(clock):
    ctx = Ctx(_at(1), _at(2))
    ctx.migration["options"].pop("cutover_window")
    window.hold(ctx, job=None)
    assert ctx.events == [] and clock[1] == []
