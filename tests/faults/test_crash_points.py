"""The crash-point sweep: a conductor (or agent) SIGKILLs itself at a named
point, is started again without the point, and the migration must end
keeping every invariant (tests/faults/invariants.py).

Per case: a fresh running CloudStack VM; the process launched with
CS2OS_CRASH_AT=<point>; the migration requested; the process dies by its
own SIGKILL at the point (proved by its exit status); it is started again
(same config, same database); the final record is checked against
CloudStack, Nova, Neutron and the disks, with a libvirt monitor watching
"one live copy" all along.  CS2OS_FAULTS=ci (default) runs the CI subset,
full every point (tests/faults/cases.py).
"""

import time

import pytest

from tests.e2e.conftest import new_vm
from tests.faults import cases
from tests.faults import chaos
from tests.faults import datadisks
from tests.faults import invariants
from tests.faults import report
from tools.testbed import images

EXPECTED = {"crash": ("succeeded",), "user-start": ("failed",),
            "lost-volume": ("failed",), "cancel": ("cancelled",)}


@pytest.mark.parametrize("case", cases.selected(), ids=cases.case_id)
def test_crash_point(case, conductor, agent, conductor_api, ctxt, cloud,
                     minicloud, cloudstack_root, workdir, monkeypatch):
    started = time.monotonic()
    chaos.ensure_plain(agent)
    chaos.ensure_plain(conductor)
    victim = conductor if case.process == "conductor" else agent
    vm = new_vm(cloud, cloudstack_root)
    if case.flow == "cold":  # warm mirrors the root volume only so far
        datadisks.add(cloud, vm)
    digest = images.sha256(vm.volume.overlay)
    holder = {}
    restore_volume = None
    if case.fault == "user-start":
        chaos.start_before_commit_check(monkeypatch, cloud, vm,
                                        conductor.db_path, holder)
    elif case.fault == "lost-volume":
        restore_volume = chaos.lose_volume_after_stop(monkeypatch, vm)
    chaos.relaunch(victim, case.point)
    request = {"source": vm.name, "host": minicloud.compute_host,
               "mode": case.flow}
    if case.fault == "cancel":
        request["cutover"] = "manual"
    created = conductor_api.create_migration(ctxt, request)
    mid = holder["id"] = created["id"]
    monitor = invariants.LiveCopyMonitor(
        conductor.db_path, mid, vm.instancename, minicloud.instances_path)
    outcome, held, note, as_expected = "?", False, "", None
    fault = "agent-" + case.fault if case.process == "agent" else case.fault
    try:
        with monitor:
            if case.fault == "cancel":
                invariants.wait_record(
                    conductor.db_path, mid,
                    lambda r: r["resources"].get("mirror_ready")
                    and r["step"] == "ready", "READY")
                conductor_api.cancel_migration(ctxt, mid)
            chaos.wait_death(victim, conductor.db_path, mid, case.point)
            crashed = invariants.read_record(conductor.db_path, mid)
            chaos.relaunch(victim)
            final = invariants.wait_final(conductor.db_path, mid)
        outcome = final["state"]
        if restore_volume is not None:
            restore_volume()
        try:
            note = invariants.check_final(
                final, cloud, minicloud, vm, workdir, overlay_digest=digest,
                monitor=monitor)
            note += datadisks.check(final, minicloud, vm, bool(
                final["committed"] or final["resources"].get("committed")))
            held = True
        except AssertionError as exc:
            note = str(exc)
            raise
        as_expected = outcome in EXPECTED[case.fault]
        assert as_expected, (
            "invariants held, but a %s at %s ended %s (expected %s): %s; "
            "crashed at state %s step %s; events %s"
            % (case.fault, case.point, outcome, EXPECTED[case.fault],
               final["error"], crashed["state"], crashed["step"],
               [(e["step"], e["message"]) for e in final["events"]]))
        if case.fault == "user-start":
            # Invariant 6: the started source fails it before the commit.
            invariants.require(
                "was started again" in (final["error"] or ""), 6,
                "migration %s failed without naming the started source: %s"
                % (mid, final["error"]))
        # The crashed process's successor finished it, under a new claim.
        assert final["lease_epoch"] > crashed["lease_epoch"] or \
            case.process == "agent", (crashed["lease_epoch"],
                                      final["lease_epoch"])
    finally:
        if restore_volume is not None:
            restore_volume()
        report.record(case.point, case.flow, fault, outcome,
                      time.monotonic() - started, held, note if not held
                      else "", expected=as_expected)
        chaos.ensure_plain(victim)
        chaos.delete_servers(minicloud, mid)
        datadisks.delete_volumes(minicloud, mid)
        chaos.stop_source_vm(cloud, vm)
