"""The warm flow's clean cutover, whole: CloudStack stops the VM, QEMU's
events prove the mirror whole.

The World's CloudStack feeds QEMU's events, scripted from a real host's
(scripted_sourceend.py), to the real SourceEndWatch as the stop is
submitted; the verdict decides whether Nova's server starts on the target
or the rollback starts the VM again.
"""

import time

import libvirt
import pytest

from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.conductor.flow import cutover as cutover_step
from tests.unit.conductor.flow.scripted_sourceend import CANCELLED
from tests.unit.conductor.flow.scripted_sourceend import CLEAN_END
from tests.unit.conductor.flow.scripted_sourceend import GUEST_SHUTDOWN
from tests.unit.conductor.flow.scripted_sourceend import HOST_SHUTDOWN
from tests.unit.conductor.flow.scripted_sourceend import JOB
from tests.unit.conductor.flow.scripted_sourceend import LOST_WRITE_END
from tests.unit.conductor.flow.scripted_sourceend import POWERDOWN
from tests.unit.conductor.flow.scripted_sourceend import qmp
from tests.unit.conductor.flow.scripted_sourceend import shutdown_time
from tests.unit.conductor.flow.warm_world import MID
from tests.unit.conductor.flow.warm_world import RUNNING
from tests.unit.conductor.flow.warm_world import World
from tests.unit.conductor.flow.warm_world import stop_failed


def _messages(done):
    return [e["message"] for e in done["events"]]


# Up to QEMU's exit: the guest shut down, the job still runs.
SHUT_DOWN_JOB_RUNNING = CLEAN_END[:CLEAN_END.index(HOST_SHUTDOWN)]


def assert_rolled_back_after_the_stop(w, done, started):
    """A clean cutover failed once CloudStack's stop was asked for: the
    job ended without pivot, T and the server went, the rollback waited
    for the stop job, and the VM started again only if ``started``."""
    assert (done["state"], done["step"]) == ("failed", "cutover")
    assert not w.watches[0].open
    assert w.dom.calls == ["blockCopy", "blockJobAbort(0)"]
    assert w.log == ["cs stop forced=False", "nova delete",
                     "cs wait stop-job-1"] + (["cs start"] if started
                                               else [])
    assert done["result"]["rolled_back"] == [
        "ended the block copy", "removed the mirror target on cmp-1",
        "deleted server srv-1"] + (["started CloudStack VM web-1 again"]
                                   if started else [])
    res = done["resources"]
    assert (res["source_stopped"], res["source_stop_job"]) == (False, None)


@pytest.mark.parametrize("stopped, proven_by", [
    # As on a real host: QEMU cancelled the job on its exit, libvirt
    # reaps QEMU later.
    (None, "job ended after the shutdown"),
    # The domain's end came with the events.
    (libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN, "domain shut down"),
])
def test_shutdown_cutover_end_to_end(db, monkeypatch, stopped, proven_by):
    w = World(db, monkeypatch)  # the default method
    w.stopped_detail = stopped
    recorded = []
    finish_mirror = w.agent.finish_mirror

    def finish(*args):
        recorded.append(db.get_migration(MID)["resources"]["source_stop_job"])
        return finish_mirror(*args)

    w.agent.finish_mirror = finish
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    # No suspend, no job end of ours: QEMU's exit ended the job.
    assert w.dom.calls == ["blockCopy"]
    # A clean stop, not forced; stop_source waits for its job, then finds
    # the VM stopped.
    assert w.log == ["cs stop forced=False", "nova start",
                     "cs wait stop-job-1", "cs unmanage"]
    # QEMU's events decided: the job was asked about by stop_source only.
    assert w.cloudstack.polls == ["stop-job-1"]
    assert recorded == ["stop-job-1"]  # the cutover recorded its job
    assert w.agent_calls() == ["prepare_mirror", "finish_mirror",
                               "swap_disk", "cleanup"]
    (watch,) = w.watches
    assert not watch.open  # registered around the stop only
    res, result = done["resources"], done["result"]
    cut = result["cutover"]
    assert cut == {"method": "shutdown", "decided": cut["decided"],
                   "guest_shutdown": True,
                   "shutdown_reason": "guest-shutdown",
                   "proven_by": proven_by}
    assert 0 <= cut["decided"] < 5
    assert (res["cutover_method"], res["cutover_done"], res["committed"],
            res["source_stopped"], res["source_stop_job"]) == (
        "shutdown", True, True, True, None)
    # The downtime runs from the guest's SHUTDOWN, not from the stop
    # request (the guest ran on until then) nor the domain's end.
    powerdown_at = watch.events[0][0]
    shutdown_at = shutdown_time(watch)
    assert res["cutover_started"] <= powerdown_at < shutdown_at
    if stopped is None:
        assert watch.stopped is None  # decided before the domain ended
    else:
        assert shutdown_at < watch.stopped[0]
    assert res["source_down_at"] == shutdown_at
    assert result["downtime_seconds"] == round(
        res["start_requested_at"] - shutdown_at, 3)
    assert 0 <= result["downtime_seconds"] < 5
    assert result["source_stopped"] is True
    messages = _messages(done)
    assert "CloudStack stops VM web-1 (clean guest shutdown); QEMU's " \
        "events prove the mirror whole (%s) %.2f s after the stop request" \
        % (proven_by, cut["decided"]) in messages, messages
    assert "server srv-1 started on the migrated disk; the source stopped " \
        "serving (shut down) %.2f s before the start was requested" \
        % result["downtime_seconds"] in messages, messages


def test_stop_source_waits_for_the_stop_job_then_deletes(db, monkeypatch):
    w = World(db, monkeypatch, method="shutdown")
    db.update_migration(MID, {"delete_source": True})
    w.ctx.migration["delete_source"] = True
    # CloudStack's job runs on after the proof (libvirt reaps QEMU).
    w.cloudstack.stop_job = ["pending", "pending"]
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["source_deleted"] is True
    # Waited for, not stopped again (it was Running until the job ended).
    assert w.log == ["cs stop forced=False", "nova start",
                     "cs wait stop-job-1", "cs destroy"]
    assert w.cloudstack.polls == ["stop-job-1"] * 3
    assert done["resources"]["source_stop_job"] is None


@pytest.mark.parametrize("leaves, forced", [("Running", True),
                                             ("Stopped", False)])
def test_a_stop_job_failing_after_the_proof_still_commits(
        db, monkeypatch, leaves, forced):
    # QEMU's events proved T at once; CloudStack's job failed afterwards
    # (its agent timed out on the reaped domain, say).  The Nova server
    # runs the proven disk: nothing is rolled back, CloudStack's view is
    # brought in line.
    w = World(db, monkeypatch)
    w.cloudstack.stop_job = ["pending", stop_failed("agent timed out")]
    w.cloudstack.failed_stop_leaves = leaves
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["cutover"]["proven_by"] == \
        "job ended after the shutdown"
    assert w.log == ["cs stop forced=False", "nova start",
                     "cs wait stop-job-1"] + (["cs stop forced=True"]
                                              if forced else []) + [
                         "cs unmanage"]
    assert w.cloudstack.state == "Stopped"
    assert done["result"]["source_stopped"] is True
    assert done["resources"]["source_stop_job"] is None
    (warning,) = [e for e in done["events"] if e["kind"] == "warning"]
    assert warning["step"] == "stop_source"
    assert "stop job for VM web-1 failed after the cutover" in \
        warning["message"] and "agent timed out" in warning["message"]


@pytest.mark.parametrize("stopped, proven_by", [
    (libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED, "domain destroyed"),
    (None, "job ended after the shutdown"),
])
def test_shutdown_cutover_of_a_guest_the_host_ended(db, monkeypatch,
                                                    stopped, proven_by):
    # ACPI ignored: CloudStack's stop gave up and destroyed the domain.
    w = World(db, monkeypatch)
    w.source_end = [POWERDOWN, HOST_SHUTDOWN,
                    qmp("JOB_STATUS_CHANGE", id=JOB, status="aborting"),
                    CANCELLED]
    w.stopped_detail = stopped
    w.reap_detail = libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    cut = done["result"]["cutover"]
    assert (cut["guest_shutdown"], cut["shutdown_reason"],
            cut["proven_by"]) == (False, "host-signal", proven_by)
    assert done["resources"]["source_down_at"] == shutdown_time(
        w.watches[0])
    assert any("(the guest did not shut down: its QEMU was ended by the "
               "host, crash-consistent); QEMU's events prove the mirror "
               "whole (%s)" % proven_by in m for m in _messages(done))


@pytest.mark.parametrize("created, asked, expected", [
    (None, "force", "force"),
    ("shutdown", "force", "force"),
    ("force", "shutdown", "shutdown"),
    ("force", None, "force"),
])
def test_the_cutover_action_may_choose_the_method(db, monkeypatch, created,
                                                  asked, expected):
    w = World(db, monkeypatch, cutover="manual", method=created)
    w.operator_cuts_over(after_looks=30, method=asked)
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["cutover"]["method"] == expected
    assert done["resources"]["cutover_method"] == expected
    if expected == "force":
        assert w.dom.calls == ["blockCopy", "suspend", "blockJobAbort(0)"]
        assert w.log == ["nova start", "cs stop forced=True", "cs unmanage"]
        assert w.watches == []
    else:
        assert w.dom.calls == ["blockCopy"]
        assert w.log == ["cs stop forced=False", "nova start",
                         "cs wait stop-job-1", "cs unmanage"]
        assert len(w.watches) == 1
    messages = [e["message"] for e in done["events"]]
    assert "cutover%s requested by ops" % (
        " (%s)" % asked if asked else "") in messages


# -- an unproven cutover starts the VM again -------------------------------


COMPLETED_WITH_ERROR = qmp("BLOCK_JOB_COMPLETED", device=JOB, len=100,
                           offset=50, speed=0, type="mirror",
                           error="Input/output error")


@pytest.mark.parametrize("source_end, stopped, words", [
    # The target's daemon died before a guest write: measured.
    (LOST_WRITE_END, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
     "block job %s reported a write error on its target (report)" % JOB),
    # The job ended while the guest still ran.
    ([POWERDOWN, CANCELLED, GUEST_SHUTDOWN],
     libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN,
     "ended (BLOCK_JOB_CANCELLED) while the guest still ran"),
    # QEMU killed: no SHUTDOWN.
    ([POWERDOWN], libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
     "destroyed without a shutdown from its QEMU"),
    (CLEAN_END, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED,
     "ended abnormally"),
    # Decided before the domain's end.
    (LOST_WRITE_END, None,
     "block job %s reported a write error on its target (report)" % JOB),
    ([POWERDOWN, CANCELLED], None,
     "ended (BLOCK_JOB_CANCELLED) while the guest still ran"),
    (SHUT_DOWN_JOB_RUNNING + [COMPLETED_WITH_ERROR], None,
     "block job %s ended with an error: Input/output error" % JOB),
])
def test_shutdown_cutover_unproven_fails_and_starts_the_vm_again(
        db, monkeypatch, source_end, stopped, words):
    w = World(db, monkeypatch)
    w.source_end, w.stopped_detail = source_end, stopped
    # CloudStack's stop runs on after the refusal: a start meanwhile would
    # be refused (the fake says so).
    w.cloudstack.stop_job = ["pending"] * 3
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "cutover")
    assert words in done["error"]
    # Nothing of T is used: the target goes; the stop job ends; then the
    # VM runs again.
    assert w.agent_calls() == ["prepare_mirror", "abort_mirror"]
    assert w.log == ["cs stop forced=False", "nova delete",
                     "cs wait stop-job-1", "cs start"]
    # Decided by the events: the stop job was asked about by the rollback.
    assert w.cloudstack.polls == ["stop-job-1"] * 4
    assert done["result"]["rolled_back"] == [
        "removed the mirror target on cmp-1", "deleted server srv-1",
        "started CloudStack VM web-1 again"]
    assert w.cloudstack.state == "Running"
    res = done["resources"]
    assert (res["source_stopped"], res["source_stop_job"]) == (False, None)
    assert not res.get("cutover_done")
    assert w.dom.calls == ["blockCopy"]  # never suspended, never pivoted


def test_unreachable_cloudstack_while_deciding_is_waited_through(
        db, monkeypatch):
    w = World(db, monkeypatch)
    # The guest shut down; the job ends with QEMU, QEMU when CloudStack's
    # job has the domain reaped.
    w.source_end = SHUT_DOWN_JOB_RUNNING
    w.cloudstack.stop_job = [
        cloudstack_errors.CloudStackUnreachable(
            endpoint="http://cs:8080/client/api",
            command="queryAsyncJobResult", reason="Connection refused"),
        "pending", "succeeded"]
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["cutover"]["proven_by"] == "domain shut down"
    assert w.watches[0].stopped is not None
    # Once per round until the job succeeded, then stop_source's wait.
    assert w.cloudstack.polls == ["stop-job-1"] * 4
    assert w.log == ["cs stop forced=False", "nova start",
                     "cs wait stop-job-1", "cs unmanage"]


@pytest.mark.parametrize("leaves, started", [("Running", False),
                                             ("Stopped", True)])
def test_a_stop_job_failing_before_the_decision_fails_the_cutover(
        db, monkeypatch, leaves, started):
    w = World(db, monkeypatch)
    w.source_end = [POWERDOWN]  # the guest takes its time
    w.cloudstack.stop_job = ["pending", stop_failed()]
    w.cloudstack.failed_stop_leaves = leaves
    done = w.run()
    assert "CloudStack job stop-job-1 (stopVirtualMachine web-1) failed " \
        "with error 530: host busy" in done["error"]
    # Two rounds in the cutover, one in the rollback's wait.
    assert w.cloudstack.polls == ["stop-job-1"] * 3
    # The VM started again only if CloudStack does not say it runs.
    assert_rolled_back_after_the_stop(w, done, started)
    assert w.cloudstack.state == "Running"


def test_shutdown_cutover_fails_if_the_domain_never_ends(db, monkeypatch):
    monkeypatch.setattr(cutover_step, "DOMAIN_END_TIMEOUT", 0.05)
    w = World(db, monkeypatch)
    # CloudStack says stopped; libvirt never says anything.
    w.source_end, w.reap_detail = SHUT_DOWN_JOB_RUNNING, None
    w.cloudstack.stop_job = ["pending"]
    w.cloudstack.job_timeout = 60  # the job's success cuts it short
    started = time.monotonic()
    done = w.run()
    assert time.monotonic() - started < 10
    assert "CloudStack stopped VM web-1, but its domain did not end on " \
        "qemu+ssh://root@10.0.0.5/system" in done["error"]
    # Asked until it succeeded, not after; then the rollback's wait.
    assert w.cloudstack.polls == ["stop-job-1"] * 3
    assert_rolled_back_after_the_stop(w, done, started=True)


def test_shutdown_cutover_fails_if_the_stop_job_never_ends(db, monkeypatch):
    w = World(db, monkeypatch)
    w.source_end = [POWERDOWN]  # the guest ignores it
    w.cloudstack.stop_job_end = "pending"
    w.cloudstack.job_timeout = 0.1
    done = w.run()
    assert "CloudStack did not stop VM web-1, but its domain did not end " \
        "on qemu+ssh://root@10.0.0.5/system" in done["error"]
    # The rollback's wait timed out too: CloudStack says it runs.
    assert_rolled_back_after_the_stop(w, done, started=False)


def test_a_stop_cloudstack_refuses_leaves_the_vm_running(db, monkeypatch):
    w = World(db, monkeypatch)

    def stop_refused(vm_id):
        w.log.append("cs stop forced=False")
        raise cloudstack_errors.CloudStackAPIError(
            command="stopVirtualMachine", errorcode=431,
            errortext="host busy")

    w.cloudstack.stop_vm_async = stop_refused
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "cutover")
    assert "host busy" in done["error"]
    assert done["resources"]["source_stopped"] is False
    assert not done["resources"].get("source_stop_job")
    # It never stopped: not started again (CloudStack says Running).
    assert w.log == ["cs stop forced=False", "nova delete"]
    assert w.cloudstack.polls == []
    assert done["result"]["rolled_back"] == [
        "ended the block copy", "removed the mirror target on cmp-1",
        "deleted server srv-1"]
    assert w.dom.state_ == RUNNING
