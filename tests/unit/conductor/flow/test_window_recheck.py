"""The cutover step checks the cutover window again before it begins
(flow/window.py recheck, flow/cutover.py): a conductor that took over a
migration held READY must not cut over once the window has ended."""

import datetime

import pytest

from cs2os_agent.conductor import schedule
from cs2os_agent.conductor.flow import cutover
from cs2os_agent.conductor.flow import window
from cs2os_agent.sourcehost import kvmhost

T0 = datetime.datetime(2030, 1, 1, 2, 0, tzinfo=datetime.timezone.utc)


class Ctx:
    def __init__(self, ends_in_minutes, **resources):
        self.migration = {"options": {"cutover_window": {
            "start": schedule.iso(T0 - datetime.timedelta(hours=1)),
            "end": schedule.iso(T0 + datetime.timedelta(
                minutes=ends_in_minutes))}}}
        self.resources = dict({"kvm_host": "kvm-1"}, **resources)
        self.conf = None


@pytest.fixture
def source_touched(monkeypatch):
    monkeypatch.setattr(schedule, "now", lambda: T0)
    touched = []

    class Stop(Exception):
        pass

    def connect(conf, host):
        touched.append(host)
        raise Stop()
    monkeypatch.setattr(kvmhost, "connect", connect)
    return touched, Stop


def test_a_window_that_ended_fails_the_cutover_before_the_source(
        source_touched):
    touched, _ = source_touched
    with pytest.raises(window.CutoverWindowMissed) as caught:
        cutover.cutover(Ctx(-1))
    assert str(caught.value) == (
        "the cutover window 2030-01-01T01:00:00Z to 2030-01-01T01:59:00Z "
        "ended at 2030-01-01T01:59:00Z before the cutover began (the "
        "mirror was READY inside it, but the cutover did not start in "
        "time); the CloudStack VM keeps running untouched")
    assert touched == []


def test_inside_the_window_the_cutover_goes_on(source_touched):
    touched, stop = source_touched
    with pytest.raises(stop):
        cutover.cutover(Ctx(5))
    assert touched == ["kvm-1"]


def test_a_cutover_already_begun_finishes_past_the_end(source_touched):
    touched, stop = source_touched
    with pytest.raises(stop):
        cutover.cutover(Ctx(-1, cutover_started=1.0, cutover_method="force"))
    assert touched == ["kvm-1"]

