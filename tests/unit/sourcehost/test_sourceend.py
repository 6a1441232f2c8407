"""cs2os_agent.sourcehost.sourceend: the clean cutover's proof, from events.

The event sequences are the ones QEMU and libvirt 9.0 gave on a real
source domain (tests/e2e runs them live): a guest shutdown, and a target
killed before a guest write, the domain destroyed right after.  They are
fed here through the watch's own callbacks, as libvirt's event loop would.
"""

import json
import threading

import libvirt
import pytest

from cs2os_agent.common import mirror_errors
from cs2os_agent.sourcehost import sourceend
from tests.fakes import libvirt as fakes

JOB = "copy-vda-libvirt-1-format"
SHUTDOWN_DONE = libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN
DESTROYED = libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED
LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE


def status(state):
    return ("JOB_STATUS_CHANGE", {"id": JOB, "status": state})


POWERDOWN = ("POWERDOWN", {})
GUEST_SHUTDOWN = ("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
HOST_SHUTDOWN = ("SHUTDOWN", {"guest": False, "reason": "host-signal"})
STOP = ("STOP", {})
CANCELLED = ("BLOCK_JOB_CANCELLED", {"device": JOB, "len": 1 << 30,
                                     "offset": 1 << 30, "speed": 0,
                                     "type": "mirror"})
COMPLETED = ("BLOCK_JOB_COMPLETED", {"device": JOB, "len": 1 << 30,
                                     "offset": 1 << 30, "speed": 0,
                                     "type": "mirror"})
ERROR = ("BLOCK_JOB_ERROR", {"device": JOB, "operation": "write",
                             "action": "report"})

# What a clean run on a real host gave, in order.
CLEAN = [POWERDOWN, GUEST_SHUTDOWN, STOP, status("standby"),
         status("ready"), HOST_SHUTDOWN, status("standby"), status("ready"),
         status("aborting"), CANCELLED, status("concluded"), status("null")]
# CloudStack's stop gave up on the guest and destroyed the domain.
HOST_ENDED = [HOST_SHUTDOWN, status("aborting"), CANCELLED,
              status("concluded"), status("null")]


@pytest.fixture
def qmp(monkeypatch):
    """libvirt_qemu's QEMU monitor event API, on the fake connection."""
    fakes.route_qemu_monitor(monkeypatch)


def watch():
    dom = fakes.FakeDomain()
    return sourceend.SourceEndWatch(fakes.FakeConnection(dom), dom, "vda")


def feed(w, events, stopped=SHUTDOWN_DONE):
    dom = w.dom
    for i, (name, data) in enumerate(events):
        w._on_qmp(w.conn, dom, name, 1000 + i, 0, json.dumps(data), None)
    if stopped is not None:
        w._on_lifecycle(w.conn, dom, libvirt.VIR_DOMAIN_EVENT_STOPPED,
                        stopped, None)
    return w


def refused(w):
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        w.verdict()
    message = str(err.value)
    assert "i-2-7-VM" in message and "vda" in message
    return message


# -- the verdict --------------------------------------------------------------


def test_a_clean_guest_shutdown_is_accepted():
    w = feed(watch(), CLEAN)
    got = w.verdict()
    shutdown_at = w.events[1][0]
    assert got == {"guest_shutdown": True, "reason": "guest-shutdown",
                   "down_at": shutdown_at, "ended": "domain shut down"}
    # The time of the first SHUTDOWN: the guest was down from there on.
    assert [e[1] for e in w.events].index("SHUTDOWN") == 1


def test_the_job_ending_after_the_shutdown_decides_before_the_domain_ends():
    # QEMU drained the guest's requests through the job, then cancelled
    # it: T is final though libvirt has not reaped QEMU yet.
    w = feed(watch(), CLEAN, stopped=None)
    assert w.wait_decided(0) is True
    assert w.wait_ended(0) is False
    got = w.verdict()
    assert got == {"guest_shutdown": True, "reason": "guest-shutdown",
                   "down_at": w.events[1][0],
                   "ended": "job ended after the shutdown"}
    # The domain's end later names itself instead.
    feed(w, [])
    assert w.verdict() == dict(got, ended="domain shut down")


@pytest.mark.parametrize("end", [
    CANCELLED, COMPLETED, status("aborting"), status("waiting"),
    status("pending"), status("concluded"), status("null")])
def test_any_job_end_after_the_shutdown_decides(end):
    w = feed(watch(), [POWERDOWN, GUEST_SHUTDOWN, STOP, end], stopped=None)
    assert w.wait_decided(0) is True
    assert w.verdict()["ended"] == "job ended after the shutdown"


def test_the_first_shutdown_is_the_down_time_of_an_early_decision():
    w = feed(watch(), HOST_ENDED, stopped=None)
    got = w.verdict()
    assert (got["guest_shutdown"], got["reason"], got["ended"]) == (
        False, "host-signal", "job ended after the shutdown")
    assert got["down_at"] == w.events[0][0]


def test_a_host_ended_domain_is_accepted_as_crash_consistent():
    got = feed(watch(), HOST_ENDED, stopped=DESTROYED).verdict()
    assert (got["guest_shutdown"], got["reason"], got["ended"]) == (
        False, "host-signal", "domain destroyed")


def test_a_powerdown_the_guest_ignored_then_destroy():
    # ACPI pressed, the guest did nothing, CloudStack destroyed it.
    got = feed(watch(), [POWERDOWN] + HOST_ENDED,
               stopped=DESTROYED).verdict()
    assert got["guest_shutdown"] is False


@pytest.mark.parametrize("events", [
    # The real failure: target killed, a guest write, the domain destroyed.
    [ERROR, HOST_SHUTDOWN, CANCELLED],
    # A failure during the guest's shutdown.
    [POWERDOWN, ERROR, GUEST_SHUTDOWN, CANCELLED],
    # Even after SHUTDOWN: not a failure QEMU's order rules out, refused.
    [GUEST_SHUTDOWN, STOP, ERROR, HOST_SHUTDOWN, CANCELLED],
    CLEAN + [ERROR],
])
def test_any_block_job_error_is_refused(events):
    message = refused(feed(watch(), events))
    assert "block job %s reported a write error on its target (report)" \
        % JOB in message
    assert "the target misses writes" in message


@pytest.mark.parametrize("event, words", [
    (CANCELLED, "ended (BLOCK_JOB_CANCELLED)"),
    (COMPLETED, "ended (BLOCK_JOB_COMPLETED)"),
    (status("aborting"), "ended (aborting)"),
    (status("waiting"), "ended (waiting)"),
    (status("pending"), "ended (pending)"),
    (status("concluded"), "ended (concluded)"),
    (status("null"), "ended (null)"),
])
def test_a_job_ending_before_the_shutdown_is_refused(event, words):
    message = refused(feed(watch(), [POWERDOWN, event] + CLEAN[1:]))
    assert "block job %s %s while the guest still ran" % (JOB, words) \
        in message


@pytest.mark.parametrize("stopped", [SHUTDOWN_DONE, None])
def test_a_job_completed_with_an_error_is_refused(stopped):
    failed = ("BLOCK_JOB_COMPLETED", dict(COMPLETED[1], error="Input/output "
                                          "error"))
    w = feed(watch(), [POWERDOWN, GUEST_SHUTDOWN, STOP, failed],
             stopped=stopped)
    assert w.wait_decided(0) is True
    assert "block job %s ended with an error: Input/output error" % JOB \
        in refused(w)


def test_job_states_that_do_not_end_it_are_fine_before_the_shutdown():
    events = [status("standby"), status("ready"), status("running"),
              POWERDOWN] + CLEAN[1:]
    assert feed(watch(), events).verdict()["guest_shutdown"] is True


@pytest.mark.parametrize("events", [
    [],
    [POWERDOWN, STOP],
    [status("standby"), status("ready")],
])
def test_no_shutdown_is_refused(events):
    # QEMU killed or crashed: no SHUTDOWN, nothing proves the drain.
    message = refused(feed(watch(), events, stopped=DESTROYED))
    assert "destroyed without a shutdown from its QEMU" in message


def test_a_job_end_without_any_shutdown_is_refused():
    message = refused(feed(watch(), [POWERDOWN, CANCELLED],
                           stopped=DESTROYED))
    assert "ended (BLOCK_JOB_CANCELLED) while the guest still ran" in message


@pytest.mark.parametrize("detail", [
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED,
])
def test_a_domain_that_ended_otherwise_is_refused(detail):
    message = refused(feed(watch(), CLEAN, stopped=detail))
    assert "ended abnormally (libvirt stop reason %d)" % detail in message


# Up to QEMU's exit: the guest shut down, the job still runs.
SHUT_DOWN_JOB_RUNNING = CLEAN[:CLEAN.index(status("aborting"))]


def test_the_verdict_waits_for_the_job_or_the_domain_to_end():
    w = feed(watch(), SHUT_DOWN_JOB_RUNNING, stopped=None)
    assert "the domain has not ended" in refused(w)
    assert (w.wait_decided(0), w.wait_ended(0)) == (False, False)
    feed(w, [])
    assert (w.wait_decided(0), w.wait_ended(0)) == (True, True)
    assert w.verdict()["ended"] == "domain shut down"


@pytest.mark.parametrize("events, stopped, decided", [
    # Nothing yet, or the guest shut down with the job still running.
    ([], None, False),
    ([POWERDOWN, status("standby"), status("ready")], None, False),
    ([POWERDOWN, GUEST_SHUTDOWN], None, False),
    (SHUT_DOWN_JOB_RUNNING, None, False),
    # An error refuses, whenever it came.
    ([ERROR], None, True),
    ([GUEST_SHUTDOWN, ERROR], None, True),
    # A job end: proves after a SHUTDOWN, refuses before one.
    ([GUEST_SHUTDOWN, CANCELLED], None, True),
    ([POWERDOWN, CANCELLED], None, True),
    ([status("concluded")], None, True),
    # The domain's end, events or not.
    ([], DESTROYED, True),
    (SHUT_DOWN_JOB_RUNNING, SHUTDOWN_DONE, True),
])
def test_wait_decided(events, stopped, decided):
    w = feed(watch(), events, stopped=stopped)
    assert w.wait_decided(0) is decided
    if not decided:
        assert "the domain has not ended" in refused(w)


def test_wait_ended_wakes_when_the_event_loop_reports_the_end():
    w = watch()
    ender = threading.Timer(0.05, feed, (w, CLEAN))
    ender.start()
    try:
        assert w.wait_ended(5) is True
    finally:
        ender.join()
    assert w.verdict()["ended"] == "domain shut down"


def test_wait_decided_wakes_when_the_job_ends_after_the_shutdown():
    w = feed(watch(), SHUT_DOWN_JOB_RUNNING, stopped=None)
    ender = threading.Timer(0.05, feed, (w, [status("aborting"), CANCELLED],
                                         None))
    ender.start()
    try:
        assert w.wait_decided(5) is True
    finally:
        ender.join()
    assert w.stopped is None
    assert w.verdict()["ended"] == "job ended after the shutdown"


def test_other_lifecycle_events_are_not_the_end():
    w = watch()
    for event in (libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
                  libvirt.VIR_DOMAIN_EVENT_RESUMED,
                  libvirt.VIR_DOMAIN_EVENT_SHUTDOWN):
        w._on_lifecycle(w.conn, w.dom, event, 0, None)
    assert w.stopped is None and w.wait_ended(0) is False


def test_event_details_that_are_not_json_are_kept():
    w = watch()
    w._on_qmp(w.conn, w.dom, "STOP", 1, 0, None, None)
    w._on_qmp(w.conn, w.dom, "ODD", 1, 0, "{not json", None)
    assert [(e[1], e[2]) for e in w.events] == [
        ("STOP", {}), ("ODD", {"details": "{not json"})]


# -- registration -----------------------------------------------------------


def test_the_watch_registers_both_callbacks_and_removes_them(qmp):
    w = watch()
    conn, dom = w.conn, w.dom
    with w as entered:
        assert entered is w
        assert conn.registered(fakes.QMP) == [w._on_qmp]
        assert conn.registered(LIFECYCLE) == [w._on_lifecycle]
        # Every event of the domain: the watch filters nothing out.
        assert conn.callbacks[w._qmp_id].filter == (None, 0)
        assert conn.callbacks[w._qmp_id].dom is dom
        # libvirt's event loop calls them: the watch records.
        conn.emit(fakes.QMP, dom, "SHUTDOWN", 1, 0,
                  json.dumps(GUEST_SHUTDOWN[1]))
        conn.emit(LIFECYCLE, dom, libvirt.VIR_DOMAIN_EVENT_STOPPED,
                  SHUTDOWN_DONE)
        assert w.verdict()["guest_shutdown"] is True
    assert conn.callbacks == {}
    assert (w._qmp_id, w._life_id) == (None, None)


def test_a_refused_qmp_registration_fails_and_leaves_nothing(qmp):
    w = watch()
    w.conn.fail["qemuMonitorEventRegister"] = \
        "QEMU monitor events are not supported"
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        with w:
            raise AssertionError("entered")
    assert "cannot watch the domain's QEMU events: QEMU monitor events " \
        "are not supported" in str(err.value)
    assert w.conn.callbacks == {}


def test_a_refused_lifecycle_registration_removes_the_qmp_one(qmp):
    w = watch()
    w.conn.fail["domainEventRegisterAny"] = "lifecycle events refused"
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        w.__enter__()
    assert "lifecycle events refused" in str(err.value)
    assert w.conn.callbacks == {}
    assert (w._qmp_id, w._life_id) == (None, None)


def test_a_failing_deregistration_does_not_hide_the_result(qmp):
    w = watch()
    with w:
        feed(w, CLEAN)
        w.conn.fail["qemuMonitorEventDeregister"] = "connection closed"
    # The refused deregistration was tried (and swallowed).
    assert w.conn.registered(fakes.QMP) == [w._on_qmp]
    assert w.verdict()["guest_shutdown"] is True
    assert (w._qmp_id, w._life_id) == (None, None)
