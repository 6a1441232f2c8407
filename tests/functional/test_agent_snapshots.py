"""A root volume with internal qcow2 snapshots (CloudStack VM snapshots).

By default the agent copies what the current state needs and leaves the
data only the snapshots hold (and a snapshot's saved memory) behind: the
staged disk has no snapshot, the guest sees its current state, and the
bytes that did not move are holes.  ``keep_snapshots`` copies the whole
file and keeps every snapshot as it was.  Real qemu-img and QEMU make the
snapshots, a real agent over RabbitMQ copies them.
"""

import os
import struct
import uuid

import pytest

from cs2os_agent import qcow2
from cs2os_agent import qemu_img
from cs2os_agent.agent import snapshots as agent_snapshots
from cs2os_agent.common import exception
from cs2os_agent.transfer import path as path_transport
from tests.functional import test_transport_ssh as transport_ssh

# The module's private sshd (a fixture: the tests below take it by name).
from tests.functional.test_transport_ssh import server  # noqa: F401
from tools.testbed import harness
from tools.testbed import images
from tools.testbed import snapshots

MiB = images.MiB

# Each step: a snapshot, then writes over what it holds.  After both, the
# volume's own first writes (0xA1 at 1 MiB, 0xA2 at 30 MiB: 5 MiB) and the
# first step's 0xB1 are held by the snapshots alone.
STEPS = [
    ("before upgrade", [(0xB1, 1 * MiB, 1 * MiB), (0xB2, 30 * MiB, 4 * MiB),
                        (0xB4, 40 * MiB, 2 * MiB)]),
    # (a compressed write needs clusters the file does not hold yet)
    ("live-1", [(0xB3, 1 * MiB, 1 * MiB), (0xB5, 40 * MiB, 2 * MiB),
                (0xB6, 50 * MiB, 1 * MiB, True)]),
]
# Clusters only the snapshots hold: A1 (1 MiB), A2 (4 MiB), B1 (1 MiB),
# B4 (2 MiB), and live-1's saved memory.
SNAPSHOT_ONLY_DATA = 8 * MiB


def path_source(path):
    return {"transport": "path", "path": path}


def allocated(path):
    return os.stat(path).st_blocks * 512


@pytest.fixture
def snapshotted(cloudstack_volume, nova_instance):
    vol = cloudstack_volume()
    snapshots.add(vol, STEPS, with_memory=("live-1",))
    inst = nova_instance(vol.template, 128 * MiB)
    return vol, inst


def test_only_the_current_state_moves_and_the_snapshots_are_dropped(
        agent, agent_api, ctxt, snapshotted, conductor_stub):
    vol, inst = snapshotted
    source_size = os.path.getsize(vol.overlay)
    migration = "mig-snap-%s" % uuid.uuid4().hex
    result = agent_api.sync_overlay(ctxt, agent.host, migration, inst.uuid,
                                    path_source(vol.overlay))
    staged = result["staged_path"]
    snaps = result["internal_snapshots"]
    assert snaps["count"] == 2 and snaps["kept"] is False
    assert [s["name"] for s in snaps["snapshots"]] == [
        "before upgrade", "live-1"]
    # live-1 was taken from a running QEMU: it holds the guest's memory.
    assert snaps["snapshots"][0]["vm_state_size"] == 0
    assert snaps["snapshots"][1]["vm_state_size"] > 0
    assert "whole_copy_reason" not in snaps
    not_copied = snaps["bytes_not_copied"]
    assert not_copied >= SNAPSHOT_ONLY_DATA
    assert result["bytes_copied"] <= source_size - not_copied
    # The staged disk: no snapshot, sound, the current guest view, and
    # the bytes that did not move are holes, not zeros written.
    assert snapshots.snapshot_names(staged) == []
    assert qemu_img.check(staged, "qcow2")["check-errors"] == 0
    qemu_img.compare(vol.reference, staged, "qcow2", "qcow2")
    assert images.read_bytes(staged, 1 * MiB, 512) == b"\xb3" * 512
    assert images.read_bytes(staged, 30 * MiB, 512) == b"\xb2" * 512
    assert images.read_bytes(staged, 40 * MiB, 512) == b"\xb5" * 512
    assert images.read_bytes(staged, 50 * MiB, 512) == b"\xb6" * 512
    assert allocated(staged) <= allocated(vol.overlay) - SNAPSHOT_ONLY_DATA
    reports = conductor_stub.final_reports(migration)
    assert reports[-1]["bytes_total"] == result["bytes_copied"]

    agent_api.swap_disk(ctxt, agent.host, migration, inst.uuid)
    qemu_img.compare(vol.reference, inst.disk, "qcow2", "qcow2")
    inst.domain.create()
    harness.wait_console(os.path.join(inst.instance_dir, "console.log"),
                         vol.message)


def test_keep_snapshots_copies_the_whole_file_and_keeps_each_snapshot(
        agent, agent_api, ctxt, snapshotted, tmp_path):
    vol, inst = snapshotted
    result = agent_api.sync_overlay(
        ctxt, agent.host, "mig-keep-%s" % uuid.uuid4().hex, inst.uuid,
        path_source(vol.overlay), None, True)
    staged = result["staged_path"]
    assert result["internal_snapshots"]["kept"] is True
    assert result["internal_snapshots"]["bytes_not_copied"] == 0
    assert result["bytes_copied"] == allocated_data(vol.overlay)
    assert snapshots.snapshot_names(staged) == ["before upgrade", "live-1"]
    qemu_img.compare(vol.reference, staged, "qcow2", "qcow2")
    # Every snapshot shows the guest what it showed in CloudStack (the
    # reference is the volume on its local template, snapshots and all).
    for name in ("before upgrade", "live-1"):
        want = snapshots.snapshot_view(vol.reference, name,
                                       str(tmp_path / "want.qcow2"))
        got = snapshots.snapshot_view(staged, name,
                                      str(tmp_path / "got.qcow2"))
        qemu_img.compare(want, got, "qcow2", "qcow2")
        os.unlink(want)
        os.unlink(got)


def allocated_data(path):
    return sum(n for _, n in _extents(path))


def _extents(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(path_transport.data_extents(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def test_keep_snapshots_of_a_version_2_volume_that_must_grow_is_refused(
        agent, agent_api, ctxt, cloudstack_volume, nova_instance):
    vol = cloudstack_volume(compat="0.10")
    snapshots.add(vol, STEPS[:1])
    inst = nova_instance(vol.template, 128 * MiB)
    before = images.dir_state(inst.instance_dir)
    with pytest.raises(exception.InvalidSource) as err:
        agent_api.sync_overlay(ctxt, agent.host, "mig-v2-keep", inst.uuid,
                               path_source(vol.overlay), None, True)
    assert "keep_snapshots" in str(err.value)
    assert "version 2 (compat=0.10)" in str(err.value)
    assert images.dir_state(inst.instance_dir) == before
    # Without keep_snapshots the same volume migrates (and grows).
    result = agent_api.sync_overlay(ctxt, agent.host, "mig-v2-drop",
                                    inst.uuid, path_source(vol.overlay))
    assert result["internal_snapshots"]["count"] == 1
    assert result["grown"] is True
    qemu_img.compare(vol.reference, result["staged_path"], "qcow2", "qcow2")


def _snapshot_entry_offset(path):
    """Byte offset of the first snapshot table entry."""
    with open(path, "rb") as f:
        header = f.read(72)
    return struct.unpack_from(">Q", header, 64)[0]


def test_a_snapshot_table_it_cannot_read_is_copied_whole_then_refused(
        agent, agent_api, ctxt, snapshotted):
    vol, inst = snapshotted
    # The first snapshot's L1 table offset off its cluster boundary: the
    # plan copies the whole file rather than guess, and qemu-img check
    # finds the copy corrupt before the snapshots are deleted: nothing is
    # staged.
    entry = _snapshot_entry_offset(vol.overlay)
    with open(vol.overlay, "r+b") as f:
        f.seek(entry)
        offset = struct.unpack(">Q", f.read(8))[0]
        f.seek(entry)
        f.write(struct.pack(">Q", offset + 512))
    with path_transport.PathSource(vol.overlay, ["/"], 1 * MiB) as src:
        header = qcow2.inspect_header(src.read_header(qcow2.HEADER_BYTES),
                                      vol.overlay)
        plan = agent_snapshots.plan(src, header)
    assert plan.skip == ()
    assert "lies off the file's clusters" in plan.whole_copy_reason
    before = images.dir_state(inst.instance_dir)
    with pytest.raises(exception.ImageCorrupt) as err:
        agent_api.sync_overlay(ctxt, agent.host, "mig-bad-snap", inst.uuid,
                               path_source(vol.overlay))
    assert "is corrupt: 1 corruptions" in str(err.value)
    assert images.dir_state(inst.instance_dir) == before


def test_tables_are_never_skipped_even_when_a_snapshot_points_at_them(
        snapshotted):
    vol, _ = snapshotted
    # The first snapshot's L1 table names the refcount table as its first
    # L2 table: its entries (refcount block offsets) then look like data
    # clusters of that snapshot alone.  They are tables: always copied.
    with open(vol.overlay, "rb") as f:
        header = f.read(104)
    refcount_table = struct.unpack_from(">Q", header, 48)[0]
    entry = _snapshot_entry_offset(vol.overlay)
    with open(vol.overlay, "r+b") as f:
        f.seek(entry)
        l1_offset = struct.unpack(">Q", f.read(8))[0]
        f.seek(l1_offset)
        f.write(struct.pack(">Q", refcount_table))
    with open(vol.overlay, "rb") as f:
        f.seek(refcount_table)
        blocks = [b for b in struct.unpack(">8Q", f.read(64)) if b]
    assert blocks
    with path_transport.PathSource(vol.overlay, ["/"], 1 * MiB) as src:
        header = qcow2.inspect_header(src.read_header(qcow2.HEADER_BYTES),
                                      vol.overlay)
        plan = agent_snapshots.plan(src, header)
    tables = [refcount_table, l1_offset, 0] + blocks
    for start, end in plan.skip:
        assert not [t for t in tables if start <= t < end], (start, end)


@pytest.fixture(scope="module")
def ssh_agent(agents, server, cloudstack_root):  # noqa: F811
    return transport_ssh.ssh_agent(agents, server, cloudstack_root,
                                   "snapshots-ssh")


def test_over_ssh_the_tables_are_read_and_the_snapshot_data_stays(
        ssh_agent, server, agent_api, ctxt, snapshotted):  # noqa: F811
    vol, inst = snapshotted
    result = agent_api.sync_overlay(
        ctxt, ssh_agent.host, "mig-snap-ssh-%s" % uuid.uuid4().hex,
        inst.uuid, transport_ssh.ssh_source(server, vol.overlay))
    snaps = result["internal_snapshots"]
    assert snaps["count"] == 2 and snaps["kept"] is False
    assert snaps["bytes_not_copied"] >= SNAPSHOT_ONLY_DATA
    # A byte stream: every byte but the ones left out crossed the wire.
    assert result["bytes_copied"] == (os.path.getsize(vol.overlay)
                                      - snaps["bytes_not_copied"])
    assert snapshots.snapshot_names(result["staged_path"]) == []
    qemu_img.compare(vol.reference, result["staged_path"], "qcow2", "qcow2")
    transport_ssh.no_ssh_left(server)
