"""Races on real processes: two requests for one VM, a cancel against the
commit, a user starting the source before the commit."""

import threading
import time

import pytest

from cs2os_agent.common import exception
from tests.e2e.conftest import new_vm
from tests.faults import cases
from tests.faults import chaos
from tests.faults import invariants
from tests.faults import report
from tools.testbed import images


def _finish(case, started, outcome, held, note, flow="cold"):
    report.record(case, flow, "race", outcome,
                  time.monotonic() - started, held, "" if held else note,
                  expected=held if outcome != "?" else None)


def test_same_vm_requested_twice_in_parallel(conductor, conductor_api, ctxt,
                                             cloud, minicloud,
                                             cloudstack_root, workdir,
                                             agent):
    """By name and by id at once, from two threads: exactly one is
    accepted, the other refused with MigrationConflict naming it
    (invariant 5)."""
    started = time.monotonic()
    chaos.ensure_plain(agent)
    chaos.ensure_plain(conductor)
    vm = new_vm(cloud, cloudstack_root)
    digest = images.sha256(vm.volume.overlay)
    barrier = threading.Barrier(2)
    answers = {}

    def request(ref):
        barrier.wait()
        try:
            answers[ref] = conductor_api.create_migration(
                ctxt, {"source": ref, "host": minicloud.compute_host})
        except Exception as exc:  # noqa: BLE001 - judged below
            answers[ref] = exc

    threads = [threading.Thread(target=request, args=(ref,))
               for ref in (vm.name, vm.id)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    accepted = {k: v for k, v in answers.items() if isinstance(v, dict)}
    refused = {k: v for k, v in answers.items() if not isinstance(v, dict)}
    outcome, held, note, mid = "?", False, "", None
    try:
        invariants.require(len(accepted) == 1 and len(refused) == 1, 5,
                           "two requests for VM %s: %s" % (vm.id, answers))
        (mid,) = [m["id"] for m in accepted.values()]
        (error,) = refused.values()
        invariants.require(
            isinstance(error, exception.MigrationConflict)
            and mid in str(error), 5,
            "the second request was refused with %r, not a "
            "MigrationConflict naming %s" % (error, mid))
        final = invariants.wait_final(conductor.db_path, mid)
        outcome = final["state"]
        assert outcome == "succeeded", (final["error"], final["events"])
        note = invariants.check_final(final, cloud, minicloud, vm, workdir,
                                      overlay_digest=digest)
        held = True
    except AssertionError as exc:
        note = str(exc)
        raise
    finally:
        _finish("same VM twice (name, id)", started, outcome, held, note)
        if mid:
            chaos.delete_servers(minicloud, mid)
        chaos.stop_source_vm(cloud, vm)


@pytest.mark.parametrize("at_step", ["swap", "start"])
def test_cancel_racing_the_commit(conductor, conductor_api, ctxt, cloud,
                                  minicloud, cloudstack_root, workdir,
                                  agent, at_step):
    """A cancel sent the moment the record reaches ``start`` (the commit
    step; or ``swap``, just before it): either it wins (cancelled, rolled
    back, never committed) or it is refused with 409 and the migration
    succeeds; never both, never neither."""
    started = time.monotonic()
    chaos.ensure_plain(agent)
    chaos.ensure_plain(conductor)
    vm = new_vm(cloud, cloudstack_root)
    digest = images.sha256(vm.volume.overlay)
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    mid = created["id"]
    monitor = invariants.LiveCopyMonitor(
        conductor.db_path, mid, vm.instancename, minicloud.instances_path)
    outcome, held, note = "?", False, ""
    try:
        with monitor:
            invariants.wait_record(conductor.db_path, mid,
                                   lambda r: r["step"] == at_step,
                                   "step %s" % at_step, interval=0.01)
            try:
                conductor_api.cancel_migration(ctxt, mid)
                cancel = "accepted"
            except exception.MigrationStateConflict as exc:
                cancel = "refused: %s" % exc
            final = invariants.wait_final(conductor.db_path, mid)
        outcome = "%s (cancel %s)" % (final["state"], cancel.split(":")[0])
        if cancel == "accepted":
            invariants.require(
                final["state"] == "cancelled" and not final["committed"], 1,
                "the cancel was accepted but the migration ended %s "
                "(committed %s)" % (final["state"], final["committed"]))
        else:
            invariants.require(final["state"] == "succeeded", 1,
                               "the cancel was refused (%s) but the "
                               "migration ended %s: %s"
                               % (cancel, final["state"], final["error"]))
        note = invariants.check_final(final, cloud, minicloud, vm, workdir,
                                      overlay_digest=digest,
                                      monitor=monitor)
        held = True
        print("\n[race] cancel at %s: %s; the migration %s: %s"
              % (at_step, cancel, final["state"],
                 final["result"].get("rolled_back")))
    except AssertionError as exc:
        note = str(exc)
        raise
    finally:
        _finish("cancel at %s" % at_step, started, outcome, held, note)
        chaos.delete_servers(minicloud, mid)
        chaos.stop_source_vm(cloud, vm)


# CI (CS2OS_FAULTS=ci) runs the warm flow only: the cold flow's user
# start at the commit is also the crash case rollback:undo_swap:after
# (tests/faults/cases.py), which checks invariant 6 too.
@pytest.mark.parametrize("flow", ["cold", "warm"] if cases.MODE == "full"
                         else ["warm"])
def test_source_started_by_a_user_before_the_commit(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        workdir, agent, monkeypatch, flow):
    """After sync (cold; warm: after the cutover) and swap, at the commit
    step, a user starts the VM in CloudStack (the stand-in starts it while
    answering the flow's own look at the VM, before answering): the
    migration fails before the commit (SourceNotStopped, invariant 6),
    the user's VM keeps running, nothing of the migration is left."""
    started = time.monotonic()
    chaos.ensure_plain(agent)
    chaos.ensure_plain(conductor)
    vm = new_vm(cloud, cloudstack_root)
    digest = images.sha256(vm.volume.overlay)
    holder = {}
    fired = chaos.start_before_commit_check(monkeypatch, cloud, vm,
                                            conductor.db_path, holder)
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host,
               "mode": flow})
    mid = holder["id"] = created["id"]
    monitor = invariants.LiveCopyMonitor(
        conductor.db_path, mid, vm.instancename, minicloud.instances_path)
    outcome, held, note = "?", False, ""
    try:
        with monitor:
            final = invariants.wait_final(conductor.db_path, mid)
        outcome = final["state"]
        assert fired, "the user's start never happened"
        monitor.stop()
        if final["committed"]:
            # Say what the commit did next to the user's VM.
            raise invariants.broken(6, (
                "the %s migration %s committed although a user started its "
                "source at the commit step (the stand-in started it before "
                "answering the flow's listVirtualMachines); one-live-copy "
                "monitor: %s; samples %s; CloudStack VM now %s (domain "
                "running: %s); events %s"
                % (flow, mid, [str(v) for v in monitor.violations[:1]]
                   or "no overlap seen", monitor.seen, cloud.vm_state(vm),
                   cloud.kvm.is_running(vm.instancename),
                   [(e["step"], e["message"][:100])
                    for e in final["events"] if e["message"] != "done"])))
        invariants.require(
            final["state"] == "failed" and not final["committed"]
            and final["step"] == "start"
            and "was started again" in (final["error"] or ""), 6,
            "a source started before the commit: the migration ended %s "
            "at %s (committed %s): %s" % (final["state"], final["step"],
                                          final["committed"],
                                          final["error"]))
        done = [e["step"] for e in final["events"]
                if e["message"] == "done"]
        assert done[-1] == "swap", done
        # The user's VM: running, left alone (cs2os did not start it).
        assert not any(e["message"].startswith("started CloudStack VM")
                       for e in final["events"]), final["events"]
        note = invariants.check_final(final, cloud, minicloud, vm, workdir,
                                      overlay_digest=digest,
                                      monitor=monitor)
        held = True
    except AssertionError as exc:
        note = str(exc)
        raise
    finally:
        _finish("user start before commit", started, outcome, held, note,
                flow=flow)
        chaos.delete_servers(minicloud, mid)
        chaos.stop_source_vm(cloud, vm)
