"""Crash points of a live migration (``--mode live``).

Per case: a fresh CloudStack VM running the counter guest on the KVM host
(a second libvirtd, tests/faults/live_chain.py), CloudStack HA on; the
conductor armed at the point (common/faultpoints.py); a live migration;
the conductor SIGKILLs itself there, is started again, and the migration
must end keeping every invariant:

- one running copy of the guest at every moment, across both libvirtds:
  A, the temporary ``cs2os-live-*`` domain, Nova's domain B
  (live_monitor.LiveMoveMonitor, every 20 ms), and A never after the
  commit;
- the guest never rebooted: its counter goes on, one by one, from A's
  console through the temporary domain's to B's (or back to A's), with no
  boot banner (tools/testbed/live_consoles.Consoles), and still counts
  once the migration ended;
- fault "crash" (every step, before and after): succeeded; the Nova server
  ACTIVE, its own domain running the guest on a disk past A's last
  counter; CloudStack's VM retired, HA off; no temporary domain, no move
  directory left in the agent's run_dir;
- fault "failed-move" (every undo step of the live rollback, before and
  after): the move fails (live_chain: QEMU cannot reach the move's
  socket), the rollback runs and the conductor dies in it; the successor
  goes on rolling back (invariant 4) and the migration ends failed with
  the guest running in A on its KVM host, CloudStack's VM Running with HA
  on again, nothing of the migration in Nova.

CS2OS_FAULTS=ci runs cases.CI's live points, full every point.
"""

import os
import time

import pytest

from cs2os_agent.agent.live import livehost
from tests.e2e import live_fixtures
from tests.e2e.live_fixtures import Consoles
from tests.e2e.live_fixtures import new_live_vm
from tests.faults import cases
from tests.faults import chaos
from tests.faults import invariants
from tests.faults import live_chain
from tests.faults import live_monitor
from tests.faults import report
from tools.testbed import images
from tools.testbed import warm_chain

# The faults conftest's chain overridden: the live one.
agent = live_chain.agent
cloud = live_fixtures.cloud
conductor = live_chain.conductor
kvm_host = live_fixtures.kvm_host
EXPECTED = {"crash": "succeeded", "failed-move": "failed"}
# m1.tiny's root disk: the hop copies A onto a target of A's size.
FLAVOR_DISK = 1024 * images.MiB


@pytest.mark.parametrize("case", cases.live_selected(), ids=cases.case_id)
def test_live_crash_point(case, conductor, agent, conductor_api, ctxt,
                          cloud, minicloud, cloudstack_root, kvm_host,
                          workdir):
    started = time.monotonic()
    live_chain.use_run_dir(agent, agent.private_run_dir
                           if case.fault == "failed-move"
                           else agent.plain_run_dir)
    chaos.ensure_plain(conductor)
    vm = new_live_vm(cloud, cloudstack_root, volume_size=FLAVOR_DISK)
    vm.haenable = True  # off for the hop; on again only after a rollback
    # The running guest writes into its overlay: Nova's disk must have it.
    a = kvm_host.conn.lookupByName(vm.instancename)
    warm_chain.guest_write(a, "write -P 0x5a 40M 1M")
    consoles = Consoles(vm.console)
    consoles.start()
    chaos.relaunch(conductor, case.point)
    mid = conductor_api.create_migration(ctxt, {
        "source": vm.name, "host": minicloud.compute_host,
        "mode": "live"})["id"]
    monitor = live_monitor.LiveMoveMonitor(
        conductor.db_path, mid, vm.instancename, minicloud.instances_path,
        kvm_host.uri, livehost.temp_name(mid),
        on_server=lambda sid: consoles.add_dir(
            os.path.join(minicloud.instances_path, sid)))
    outcome, held, note, as_expected = "?", False, "", None
    try:
        try:
            with monitor:
                chaos.wait_death(conductor, conductor.db_path, mid,
                                 case.point)
                crashed = invariants.read_record(conductor.db_path, mid)
                chaos.relaunch(conductor)
                final = invariants.wait_final(conductor.db_path, mid)
            outcome = final["state"]
            # The guest still counts, wherever it ended up.
            consoles.wait_beyond(consoles.last() + 50, timeout=10)
        finally:
            consoles.stop()
        try:
            monitor.assert_held()
            pauses = consoles.assert_continuous()
            went = [p for _s, _v, _a, p in consoles.switches()]
            a_last = max(v for _t, p, v in consoles.counters()
                         if p == vm.console and v is not None)
            if outcome == "succeeded":
                note = live_chain.check_succeeded(
                    final, cloud, minicloud, vm, kvm_host,
                    monitor.temp_name, a_last, workdir)
                warm_chain.read_back(os.path.join(
                    minicloud.instances_path,
                    final["resources"]["server_id"], "disk"),
                    "read -P 0x5a 40M 1M")
                # A -> temporary -> B's console.log.
                assert len(went) == 2 and went[-1] == os.path.join(
                    minicloud.instances_path,
                    final["resources"]["server_id"], "console.log"), went
            else:
                note = live_chain.check_rolled_back(
                    final, cloud, minicloud, vm, kvm_host,
                    monitor.temp_name, monitor.server_ids)
                # A -> temporary -> A's own console again.
                assert went and went[-1] == vm.console, went
            dirs, state_file = live_chain.run_dir_left(agent.run_dir, mid)
            invariants.require(not dirs, 2, "the agent's run_dir %s keeps "
                               "%s" % (agent.run_dir, dirs))
            # Removed by the agent's cleanup or restore_disk, once no hop
            # is left to undo.
            invariants.require(state_file is None, 2, "the agent keeps "
                               "its live record %s" % state_file)
            held = True
        except AssertionError as exc:
            note = str(exc)
            raise
        print("\n[live] %s: %s; %s; monitor %d samples %s; longest pause "
              "%.0f ms; state file %s" % (
                  case.point, outcome, consoles.describe(), monitor.samples,
                  monitor.seen, pauses[0][0] * 1000, state_file))
        print("[live] events: %s" % "; ".join(
            "%s: %s" % (e["step"], e["message"]) for e in final["events"]
            if e["message"] != "done"))
        as_expected = outcome == EXPECTED[case.fault]
        assert as_expected, (
            "invariants held, but a %s at %s ended %s (expected %s): %s; "
            "events %s" % (case.fault, case.point, outcome,
                           EXPECTED[case.fault], final["error"],
                           [(e["step"], e["message"])
                            for e in final["events"]]))
        assert final["lease_epoch"] > crashed["lease_epoch"], (
            crashed["lease_epoch"], final["lease_epoch"])
        assert monitor.seen["temporary running"] > 0, monitor.seen
    finally:
        report.record(case.point, case.flow, case.fault, outcome,
                      time.monotonic() - started, held,
                      note if not held else "", expected=as_expected)
        chaos.ensure_plain(conductor)
        chaos.delete_servers(minicloud, mid)
        chaos.stop_source_vm(cloud, vm)
        monitor.stop()
