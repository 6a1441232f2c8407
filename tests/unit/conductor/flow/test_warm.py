"""The warm flow, whole: runner.run over every step, with the warm World.

A real SQLite record with fake libvirt, agent, Nova and CloudStack (no
process, no libvirtd; warm_world.py).  The real thing (KVM source,
qemu-storage-daemon, ssh tunnel, Nova) runs in
tests/e2e/test_warm_migration.py; here: the order of every call that
matters (suspend before the job ends, resume before anything else on a
rollback, nothing pivots), the cutover hold, failures before and after the
commit point, with the "force" cutover method (suspend, end the job).  The
clean "shutdown" cutover: test_warm_shutdown_cutover.py; a conductor
restart or a retry: test_warm_restart.py.
"""

import libvirt
import pytest

from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.conductor import manager
from cs2os_agent.conductor.flow import cold
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import runner
from cs2os_agent.conductor.flow import warm
from cs2os_agent.sourcehost import blockcopy
from tests.unit.conductor.flow.warm_world import EXPORT
from tests.unit.conductor.flow.warm_world import MID
from tests.unit.conductor.flow.warm_world import READY_TO_MIRROR
from tests.unit.conductor.flow.warm_world import RUNNING
from tests.unit.conductor.flow.warm_world import World


def test_warm_runs_its_own_steps_and_cold_is_untouched():
    assert [n for n, _ in runner.flow({"mode": "warm"})[0]] == [
        "validate", "image", "ports", "boot", "mirror", "ready", "cutover",
        "finish", "swap", "start", "stop_source", "cleanup", "retire_source"]
    assert runner.flow({"mode": "cold"}) == (cold.STEPS, cold.ROLLBACK)
    assert runner.flow({}) == (cold.STEPS, cold.ROLLBACK)
    # The cold steps are the same functions, not copies.
    warm_steps = dict(warm.STEPS)
    for name in ("ports", "boot", "swap", "cleanup", "retire_source"):
        assert warm_steps[name] is dict(cold.STEPS)[name]


def result_of(world):
    return world.db.get_migration(MID)["result"]


def test_auto_cutover_end_to_end(db, monkeypatch):
    w = World(db, monkeypatch, method="force",
              mirror_max_bandwidth_mbps=80)
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert w.watches == []  # the force method watches no event
    # Suspend, then end the job without pivot (flags 0); never resumed:
    # CloudStack stops the frozen VM after Nova started the server.
    assert w.dom.calls == ["blockCopy", "suspend", "blockJobAbort(0)"]
    assert w.dom.params == {
        libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH: 80 * 125000}
    assert w.agent_calls() == ["prepare_mirror", "finish_mirror",
                               "swap_disk", "cleanup"]
    # After the commit CloudStack forgets the source: nobody can start it.
    assert w.log == ["nova start", "cs stop forced=True", "cs unmanage"]
    assert result_of(w)["source_unmanaged"] is True
    source = w.agent.calls[0][4]
    assert source == {
        "transport": "ssh", "host": "10.0.0.5", "port": 2222,
        "virtual_size": 1 << 30, "socket_owner": "64055:64055",
        "base_proof": READY_TO_MIRROR["base_proof"]}
    res, result = done["resources"], done["result"]
    assert res["mirror_ready"] and res["cutover_done"] and res["committed"]
    assert res["mirror"]["export"] == EXPORT
    assert 0 <= result["downtime_seconds"] < 5
    assert result["cutover"]["method"] == "force"
    assert res["cutover_method"] == "force"
    assert result["mirror"]["bytes"] == 100
    assert result["source_stopped"] is True
    assert (done["bytes_done"], done["bytes_total"]) == (100, 100)
    messages = [e["message"] for e in done["events"]]
    assert any(m.startswith("READY: ") for m in messages)


def test_delete_source_destroys_after_the_stop(db, monkeypatch):
    w = World(db, monkeypatch, method="force")
    db.update_migration(MID, {"delete_source": True})
    w.ctx.migration["delete_source"] = True
    assert w.run()["result"]["source_deleted"] is True
    assert w.log == ["nova start", "cs stop forced=True", "cs destroy"]


def test_the_mirror_step_sees_ready_when_libvirt_reports_it(db, monkeypatch):
    # A poll interval longer than the test may run: only the job's events
    # (libvirt reports each of its steps here) wake the wait early.
    w = World(db, monkeypatch, method="force", mirror_poll_interval=60)
    conn = w.conn
    registered = []

    def libvirt_reports(dom):
        for callback_id, reg in list(conn.callbacks.items()):
            assert reg.dom is dom
            registered.append(callback_id)
            reg.callback(conn, dom, "vda", 2, 3, None)

    w.dom.on_info = libvirt_reports
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["mirror"]["seconds"] < 30
    assert set(registered) == {1}
    assert conn.callbacks == {}  # deregistered with the step


def test_a_write_racing_the_cutover_is_retried_not_failed(db, monkeypatch):
    w = World(db, monkeypatch, method="force")
    raced = []
    real_cutover = blockcopy.BlockCopy.cutover

    def cutover(self, require_ready=True):
        if not raced:
            raced.append(True)
            raise self._fail("cutover refused: the job is not ready")
        return real_cutover(self, require_ready)

    monkeypatch.setattr(blockcopy.BlockCopy, "cutover", cutover)
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert raced and w.dom.calls.count("suspend") == 1


# -- the cutover hold ------------------------------------------------------


def test_manual_cutover_holds_until_requested(db, monkeypatch):
    w = World(db, monkeypatch, method="force", cutover="manual")
    looks = w.operator_cuts_over(after_looks=30)
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    # Held READY for a while before the suspend.
    assert sum(looks) > 20
    assert w.dom.calls == ["blockCopy", "suspend", "blockJobAbort(0)"]
    messages = [e["message"] for e in done["events"]]
    assert "cutover requested by ops" in messages
    assert any("holding the mirror READY until a cutover is requested" in m
               for m in messages)


def test_manual_hold_times_out_and_rolls_back(db, monkeypatch):
    w = World(db, monkeypatch, cutover="manual", manual_cutover_timeout=0.05)
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "ready")
    assert "manual_cutover_timeout" in done["error"]
    assert w.dom.calls == ["blockCopy", "blockJobAbort(0)"]
    assert w.dom.state_ == RUNNING
    assert w.agent_calls()[-1] == "abort_mirror"


def test_dead_target_fails_the_hold_even_without_guest_writes(
        db, monkeypatch):
    w = World(db, monkeypatch, cutover="manual")

    def daemon_dies(dom):
        if dom.ready:
            w.agent.status = {"state": "failed",
                              "error": "qemu-storage-daemon killed"}

    w.dom.on_info = daemon_dies
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "ready")
    assert "qemu-storage-daemon killed" in done["error"]
    # The job was still there: ended without pivot, source untouched.
    assert w.dom.calls == ["blockCopy", "blockJobAbort(0)"]
    assert w.dom.state_ == RUNNING


def test_cancel_during_the_hold(db, monkeypatch):
    w = World(db, monkeypatch, cutover="manual")

    def cancel(dom):
        if dom.ready:
            db.update_migration(MID, {"state": "cancelling"})

    w.dom.on_info = cancel
    done = w.run()
    assert done["state"] == "cancelled"
    assert w.dom.calls == ["blockCopy", "blockJobAbort(0)"]
    assert w.dom.state_ == RUNNING
    assert w.agent_calls() == ["prepare_mirror", "abort_mirror"]
    assert w.log == ["nova delete"]


# -- failures before the commit --------------------------------------------


def test_job_failing_mid_mirror_fails_cleanly_with_the_agents_reason(
        db, monkeypatch):
    w = World(db, monkeypatch)
    w.dom.step = 10

    def tunnel_dies(dom):
        if dom.job and dom.job["cur"] >= 30:
            dom.job = None  # libvirt dropped the failed transient job
            w.agent.status = {"state": "failed", "error": "tunnel ended"}

    w.dom.on_info = tunnel_dies
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "mirror")
    assert "ended without being asked to" in done["error"]
    assert "on the agent: tunnel ended" in done["error"]
    # The source was never frozen; the target and the server are gone.
    assert "suspend" not in w.dom.calls and w.dom.state_ == RUNNING
    assert w.agent_calls() == ["prepare_mirror", "abort_mirror"]
    assert w.log == ["nova delete"]
    assert done["result"]["rolled_back"] == [
        "removed the mirror target on cmp-1", "deleted server srv-1"]


def test_failure_after_the_cutover_resumes_the_source_first(db,
                                                            monkeypatch):
    w = World(db, monkeypatch, method="force")
    w.agent.finish_error = mirror_errors.StorageDaemonDied(
        pid=11, status="killed by SIGKILL", during="closing", stderr="")
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "finish")
    assert w.dom.calls == ["blockCopy", "suspend", "blockJobAbort(0)",
                           "resume"]
    # Resumed before the server is deleted: the VM's downtime is short.
    assert done["result"]["rolled_back"] == [
        "resumed CloudStack VM web-1", "removed the mirror target on cmp-1",
        "deleted server srv-1"]
    assert done["resources"]["source_suspended"] is False


def test_a_start_nova_refused_outright_is_no_commit(db, monkeypatch):
    # Nova's policy said no (403): nothing started, so the commit recorded
    # for the start is taken back and the migration rolls back.
    w = World(db, monkeypatch, method="force")
    w.nova.start_error = exception.StartRefused(
        operation="start server srv-1", reason="Forbidden: policy")
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "start")
    assert done["committed"] is False
    assert done["result"]["rolled_back"] == [
        "resumed CloudStack VM web-1", "removed the mirror target on cmp-1",
        "put Nova's original disk back on server srv-1",
        "deleted server srv-1"]
    assert w.dom.calls[-1] == "resume"


@pytest.mark.parametrize("method", ["force", None])
def test_a_source_restarted_before_the_commit_fails_the_migration(
        db, monkeypatch, method):
    # Someone starts the source (virsh, HA, a user) after the cutover:
    # the Nova server must not start next to it.
    w = World(db, monkeypatch, method=method)
    real_finish = w.agent.finish_mirror

    def finish_then_someone_starts_it(*args):
        answer = real_finish(*args)
        w._source_starts()
        return answer

    w.agent.finish_mirror = finish_then_someone_starts_it
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "start")
    assert "was started again" in done["error"]
    assert "i-2-7-VM is running" in done["error"]
    assert done["committed"] is False
    assert "nova start" not in w.log
    assert "restore_disk" in w.agent_calls()


def test_a_source_cloudstack_runs_on_another_host_fails_the_migration(
        db, monkeypatch):
    w = World(db, monkeypatch)
    db.update_migration(MID, {"source": {"host": {"id": "host-1"}}})
    w.ctx.migration["source"] = {"host": {"id": "host-1"}}
    real_find = w.cloudstack.find_vm

    def elsewhere(vm_id):
        vm = real_find(vm_id)
        if w.agent_calls()[-1:] == ["swap_disk"]:
            vm.update(state="Running", hostid="host-2", hostname="kvm-2")
        return vm

    w.cloudstack.find_vm = elsewhere
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "start")
    assert "CloudStack says Running on host kvm-2" in done["error"]
    assert "nova start" not in w.log


# -- failures after the commit ---------------------------------------------


class _Engine:
    def submit(self, migration_id):
        return True


def test_a_failing_start_after_the_commit_never_rolls_back(
        db, monkeypatch):
    # Nova was asked to start the server on the migrated disk: it may run
    # the guest, so the frozen source is never resumed and nothing of the
    # migration is undone; a retry resumes at the start.
    w = World(db, monkeypatch, method="force")
    w.nova.start_error = exception.OpenStackError(operation="start",
                                                  reason="no")
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "start")
    assert done["committed"] is True
    assert "rolled_back" not in done["result"]
    assert done["result"]["committed_failure"]["step"] == "start"
    assert "cs2os will not start the CloudStack VM again" in done["error"]
    assert w.dom.calls[-1] == "blockJobAbort(0)"  # still frozen
    assert "cs start" not in w.log and "nova delete" not in w.log
    assert "restore_disk" not in w.agent_calls()

    w.nova.start_error = None
    mgr = manager.ConductorManager(db, engine=_Engine())
    queued = mgr.retry_migration(cs2os_context.RequestContext(
        user_id="ops"), MID)
    assert (queued["state"], queued["step"]) == ("queued", "start")
    w.ctx = flow_context.FlowContext(db.get_migration(MID), db, w.conf,
                                     w.clients)
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert w.log.count("nova start") == 2 and "cs start" not in w.log


def test_failure_after_commit_never_restarts_the_source(db, monkeypatch):
    w = World(db, monkeypatch, method="force")

    def stop_fails(vm_id, forced=False):
        raise cloudstack_errors.CloudStackJobFailed(
            job_id="j", command="stopVirtualMachine", target=vm_id,
            errorcode=530, errortext="host down")

    w.cloudstack.stop_vm = stop_fails
    done = w.run()
    # The guest runs in Nova: the migration succeeded, and says what is
    # left to do by hand.
    assert (done["state"], done["step"]) == ("succeeded", "done")
    (warning,) = done["result"]["warnings"]
    assert warning["step"] == "stop_source"
    assert "host down" in warning["message"]
    assert "rolled_back" not in done["result"]
    assert "resume" not in w.dom.calls and "nova delete" not in w.log
    assert "cs start" not in w.log
