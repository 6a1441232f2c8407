"""Crash points of a warm migration whose VM has data disks.

Every disk (the root and two hot-plugged data disks) is mirrored, and one
cutover switches them all (conductor/flow/warmdisks.py).  Per case: a
fresh running CloudStack VM with two small data disks in its domain, the
conductor armed at the point (common/faultpoints.py), a warm migration
with an automatic cutover; the conductor SIGKILLs itself there, is
started again, and the migration must succeed keeping every invariant:
one live copy of the guest all along (the libvirt monitor), the root disk
migrated (check_final), each data disk a Cinder volume of this migration
attached to the server with the disk's guest view, and CloudStack's data
disk files unchanged (tests/faults/datadisks.py).

The cases (tests/faults/cases.py, WARM_DATA_DISK_POINTS): ``mirror:after``
(every job READY, the conductor gone before the ``ready`` step: the
successor finds the JobSet whole and goes on, or mirrors again) and
``cutover:after`` (the jobs ended, the targets not yet closed: the
successor finishes every volume).  They run in the full suite (tox -e
faults) only: under CS2OS_FAULTS=ci the module defines no test.

The conductor reaches the KVM host over qemu+ssh (sourcehost/kvmhost.py
says why: libvirt 9.0's libssh transport crashed it on this domain).
"""

import time

import libvirt
import pytest

from tests.e2e.conftest import new_vm
from tests.e2e.test_warm_data_disks import hotplug
from tests.faults import cases
from tests.faults import chaos
from tests.faults import datadisks as fault_datadisks
from tests.faults import invariants
from tests.faults import report
from tools.testbed import datadisks
from tools.testbed import harness as ft
from tools.testbed import images

DEVS = ("vdb", "vdc")
CASES = cases.warm_data_disk_selected()


def add_running_data_disks(cloud, vm):
    """Two small data disks, listed by the stand-in and hot-plugged into
    the running domain (as CloudStack attaches a volume to a running VM),
    with their files' digests."""
    vm.data_disks = [datadisks.make_data_disk(vm.volume.pool_dir, **spec)
                     for spec in fault_datadisks.DISKS]
    vm.listed_data_disks = []
    conn = libvirt.open(ft.LIBVIRT_URI)
    try:
        dom = conn.lookupByName(vm.instancename)
        for disk, dev in zip(vm.data_disks, DEVS, strict=True):
            listed = datadisks.attach(cloud, vm, disk)
            hotplug(cloud, dom, disk, dev, listed.id)
            vm.listed_data_disks.append(listed)
    finally:
        conn.close()
    vm.data_disk_sums = {d.path: images.sha256(d.path)
                         for d in vm.data_disks}


if CASES:
    @pytest.mark.parametrize("case", CASES, ids=cases.case_id)
    def test_warm_data_disks_crash_point(case, conductor, agent,
                                         conductor_api, ctxt, cloud,
                                         minicloud, cloudstack_root,
                                         workdir):
        started = time.monotonic()
        chaos.ensure_plain(agent)
        chaos.ensure_plain(conductor)
        vm = new_vm(cloud, cloudstack_root)
        add_running_data_disks(cloud, vm)
        digest = images.sha256(vm.volume.overlay)
        chaos.relaunch(conductor, case.point)
        created = conductor_api.create_migration(ctxt, {
            "source": vm.name, "host": minicloud.compute_host,
            "mode": "warm"})
        mid = created["id"]
        monitor = invariants.LiveCopyMonitor(
            conductor.db_path, mid, vm.instancename,
            minicloud.instances_path)
        outcome, held, note = "?", False, ""
        try:
            with monitor:
                chaos.wait_death(conductor, conductor.db_path, mid,
                                 case.point)
                crashed = invariants.read_record(conductor.db_path, mid)
                chaos.relaunch(conductor)
                final = invariants.wait_final(conductor.db_path, mid)
            outcome = final["state"]
            try:
                committed = bool(final["committed"]
                                 or final["resources"].get("committed"))
                note = invariants.check_final(
                    final, cloud, minicloud, vm, workdir,
                    overlay_digest=digest, monitor=monitor)
                note += fault_datadisks.check(final, minicloud, vm,
                                              committed)
                held = True
            except AssertionError as exc:
                note = str(exc)
                raise
            assert outcome == "succeeded", (
                "invariants held, but a crash at %s ended %s: %s; events %s"
                % (case.point, outcome, final["error"],
                   [(e["step"], e["message"]) for e in final["events"]]))
            # Every disk went over: the record names both volumes, in
            # device order, each closed by the agent.
            disks = final["result"]["data_disks"]
            assert [d["dev"] for d in disks] == list(DEVS), disks
            assert final["lease_epoch"] > crashed["lease_epoch"], (
                crashed["lease_epoch"], final["lease_epoch"])
        finally:
            report.record(case.point, case.flow, case.fault, outcome,
                          time.monotonic() - started, held,
                          note if not held else "", expected=held)
            chaos.ensure_plain(conductor)
            chaos.delete_servers(minicloud, mid)
            fault_datadisks.delete_volumes(minicloud, mid)
            chaos.stop_source_vm(cloud, vm)
