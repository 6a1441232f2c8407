"""Data disks in the crash-point sweep: invariant 2 for Cinder volumes.

A cold case's VM gets two small data disks (one thin on a template of
its own, one standalone), so every crash point also crosses the volumes
and sync_volumes steps and the rollback's undo_volumes.  Afterwards:

- CloudStack's data disk files are unchanged (cs2os only reads them);
- committed: each disk is a Cinder volume of this migration, attached to
  the server, whose guest view (read from RBD) equals the disk's;
- not committed: no volume of this migration is left.
"""

import subprocess

from tests.faults import invariants
from tools.testbed import datadisks
from tools.testbed import images
from tools.testbed.minicloud import smoke

MiB = images.MiB
DISKS = (dict(size=16 * MiB, writes=[(0x71, 1 * MiB, 1 * MiB)],
              template_writes=[(0x70, 0, 2 * MiB)]),
         dict(size=16 * MiB, writes=[(0x72, 8 * MiB, 1 * MiB)]))


def add(cloud, vm):
    """Attach the data disks to ``vm`` (in the stand-in) and remember
    their files' digests."""
    vm.data_disks = [datadisks.make_data_disk(vm.volume.pool_dir, **spec)
                     for spec in DISKS]
    vm.listed_data_disks = [datadisks.attach(cloud, vm, disk)
                            for disk in vm.data_disks]
    vm.data_disk_sums = {d.path: images.sha256(d.path)
                         for d in vm.data_disks}


def ours(minicloud, migration_id):
    """The Cinder volumes of this migration, by its metadata."""
    return [v for v in minicloud.conn.block_storage.volumes(
        details=True, all_projects=True)
        if (v.metadata or {}).get("cs2os_migration_id") == migration_id]


def check(record, minicloud, vm, committed):
    """Invariant 2 for the data disks; a phrase for the report."""
    if not getattr(vm, "data_disks", None):
        return ""
    now = {d.path: images.sha256(d.path) for d in vm.data_disks}
    invariants.require(now == vm.data_disk_sums, 2, "CloudStack data disk "
                       "files changed: %s" % sorted(
                           p for p in now if now[p] != vm.data_disk_sums[p]))
    volumes = ours(minicloud, record["id"])
    if not committed:
        invariants.require(not volumes, 2, "rolled-back migration %s left "
                           "Cinder volumes %s" % (record["id"],
                                                  [v.id for v in volumes]))
        return "; no volume left"
    by_disk = {(v.metadata or {}).get("cs2os_cloudstack_volume_id"): v
               for v in volumes}
    server_id = record["resources"].get("server_id")
    for disk, listed in zip(vm.data_disks, vm.listed_data_disks,
                            strict=True):
        volume = by_disk.get(listed.id)
        invariants.require(volume is not None, 2, "committed migration %s "
                           "has no volume for data disk %s" % (
                               record["id"], listed.name))
        invariants.require(
            [a["server_id"] for a in volume.attachments] == [server_id], 2,
            "volume %s of data disk %s is attached to %s, not server %s"
            % (volume.id, listed.name, volume.attachments, server_id))
        proc = subprocess.run(
            ["qemu-img", "compare", "-f", "qcow2", "-F", "raw",
             disk.reference, smoke.volumes.rbd_uri(minicloud.info, volume)],
            capture_output=True, text=True)
        invariants.require(proc.returncode == 0, 2, "volume %s is not data "
                           "disk %s: %s" % (volume.id, listed.name,
                                            proc.stdout.strip()))
    return "; %d volumes hold the data disks" % len(vm.data_disks)


def delete_volumes(minicloud, migration_id):
    """After the case (its servers deleted first): its volumes."""
    for volume in ours(minicloud, migration_id):
        try:
            smoke.volumes.delete_volume(minicloud.conn, volume)
        except Exception:  # noqa: BLE001 - gone already
            pass
