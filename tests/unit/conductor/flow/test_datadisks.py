"""Data disks planned in validate, their volumes made and attached, the
agent's writes recorded, and the volumes deleted by a rollback: a real
FlowContext on the test database, files standing in for a transport and
a fake VolumeClient.  The real thing is tests/e2e/test_data_disks.py.
"""

import contextlib
import types

import pytest

from cs2os_agent import transfer
from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import datadisks
from tests.unit.conductor.flow.script import Clients
from tests.unit.conductor.flow.script import new_queued_migration
from tests.unit.test_qcow2 import qcow2_header

MiB = 1024 * 1024
GiB = 1024 ** 3
POOL = "6a1c5e0e-0000-4000-8000-000000000001"
POOL2 = "6a1c5e0e-0000-4000-8000-000000000002"


def conf(type_map=None):
    return types.SimpleNamespace(
        conductor=types.SimpleNamespace(
            lease_seconds=60, agent_restart_timeout=30, wait_timeout=5,
            overlay_transport="path", primary_storage_mount="/pools"),
        cloudstack=types.SimpleNamespace(volume_type_map=type_map or {}))


def data_disk(n, pool=POOL, size=GiB, **values):
    return dict({"id": "cs-d%d" % n, "name": "data-%d" % n, "deviceid": n,
                 "storage": {"id": pool, "name": "nfs-%s" % pool[-1]},
                 "file": "/mnt/%s/d%d" % (pool, n), "size": size,
                 "diskofferingid": None, "diskofferingname": None},
                **values)


def vm(*disks):
    return {"name": "web-1", "id": "vm-1",
            "overlay_path": "/mnt/%s/root" % POOL,
            "root_volume": {"storage": {"id": POOL}},
            "datadisks": list(disks)}


class Volume:
    def __init__(self, volume_id, status, cloudstack_id, migration_id):
        self.id, self.status = volume_id, status
        self.cloudstack_id, self.migration_id = cloudstack_id, migration_id


class FakeVolumes:
    """VolumeClient's methods the steps use; ``calls`` in order."""

    def __init__(self, db=None):
        self.db = db
        self.calls = []
        self.types = {"ssd", "standard"}
        self.room = (None, None)
        self.volumes = {}
        self.attached = []
        self.recorded_when_attaching = []
        self.fail_create_of = None
        self.settles_at = {}  # volume id: the status it goes to by itself

    def headroom(self):
        self.calls.append(("headroom",))
        return self.room

    def volume_type_exists(self, name):
        self.calls.append(("type", name))
        return name in self.types

    def find_volumes(self, migration_id):
        self.calls.append(("find", migration_id))
        return {v.cloudstack_id: v for v in self.volumes.values()
                if v.migration_id == migration_id}

    def add(self, cloudstack_id, status="available", migration_id="m1"):
        volume = Volume("vol-%d" % (len(self.volumes) + 1), status,
                        cloudstack_id, migration_id)
        self.volumes[volume.id] = volume
        return volume

    def create_volume(self, name, size_gib, volume_type, migration_id,
                      cloudstack_id, description):
        self.calls.append(("create", name, size_gib, volume_type,
                           migration_id, cloudstack_id, description))
        if cloudstack_id == self.fail_create_of:
            raise exception.OpenStackError(operation="create", reason="x")
        return self.add(cloudstack_id, "creating", migration_id)

    def get_volume(self, volume_id):
        return self.volumes.get(volume_id)

    def wait_volume(self, volume_id, status):
        """As VolumeClient's: a volume that settles at another status
        than ``status`` is waited for until the deadline."""
        self.calls.append(("wait", volume_id, status))
        wanted = (status,) if isinstance(status, str) else status
        settled = self.settles_at.get(volume_id, wanted[0])
        self.volumes[volume_id].status = settled
        if settled not in wanted:
            raise exception.OpenStackError(
                operation="volume %s to become %s" % (volume_id, status),
                reason="still %s after 5 s" % settled)

    def attached_volumes(self, server_id):
        self.calls.append(("attached", server_id))
        return list(self.attached)

    def attach(self, server_id, volume_id):
        self.calls.append(("attach", server_id, volume_id))
        self.recorded_when_attaching.append(
            self.db.get_migration("m1")["resources"].get("volumes"))
        self.attached.append(volume_id)
        self.volumes[volume_id].status = "in-use"

    def delete_volume(self, volume_id):
        self.calls.append(("delete", volume_id))
        return self.volumes.pop(volume_id, None) is not None


@pytest.fixture
def fake(db, monkeypatch):
    client = FakeVolumes(db)
    monkeypatch.setattr(flow_context.FlowContext, "volumes",
                        property(lambda self: client))
    return client


@pytest.fixture
def files(monkeypatch):
    """{/pools path: (backing as /mnt path or None, virtual size)}, served
    as headers; ``files.read`` lists the paths read."""
    made = {}
    read = []

    @contextlib.contextmanager
    def get_source(source, _conf):
        read.append(source["path"])
        backing, size = made[source["path"]]
        header = qcow2_header(size=size, backing=(backing or "").encode())
        yield types.SimpleNamespace(read_header=lambda n: header[:n],
                                    describe=lambda: source["path"])

    monkeypatch.setattr(transfer, "get_source", get_source)
    made_files = types.SimpleNamespace(made=made, read=read)
    return made_files


def ctx_for(db, type_map=None, **values):
    clients = Clients()
    new_queued_migration(db, **values)
    return flow_context.FlowContext(db.get_migration("m1"), db,
                                    conf(type_map), clients)


def src(pool, name):
    return {"transport": "path", "path": "/pools/%s/%s" % (pool, name)}


# -- plan --------------------------------------------------------------------


def test_a_vm_without_data_disks_plans_nothing_and_asks_nothing(db, fake,
                                                                files):
    ctx = ctx_for(db)
    assert datadisks.plan(ctx, vm()) == []
    assert datadisks.plan(ctx, dict(vm(), datadisks=None)) == []
    assert fake.calls == [] and files.read == []


def test_plan_reads_each_disks_chain_in_its_own_pool(db, fake, files):
    files.made.update({
        "/pools/%s/d1" % POOL: (None, 3 * GiB + 1),
        "/pools/%s/d2" % POOL2: ("/mnt/%s/l1" % POOL2, 64 * MiB),
        "/pools/%s/l1" % POOL2: ("/mnt/%s/tmpl" % POOL2, 64 * MiB),
        "/pools/%s/tmpl" % POOL2: (None, 64 * MiB),
    })
    ctx = ctx_for(db, target_project_id="proj-1")
    planned = datadisks.plan(ctx, vm(
        data_disk(1, size=GiB), data_disk(2, pool=POOL2, size=5 * GiB + 1)))
    assert planned == [
        {"cloudstack_id": "cs-d1", "name": "data-1", "deviceid": 1,
         "chain": [src(POOL, "d1")], "virtual_size": 3 * GiB + 1,
         "size_gib": 4, "volume_type": None, "internal_snapshots": 0,
         "volume_type_chosen_by": "Cinder's default", "format": "qcow2"},
        {"cloudstack_id": "cs-d2", "name": "data-2", "deviceid": 2,
         "chain": [src(POOL2, "d2"), src(POOL2, "l1"), src(POOL2, "tmpl")],
         "virtual_size": 64 * MiB, "size_gib": 6, "volume_type": None,
         "volume_type_chosen_by": "Cinder's default",
         "internal_snapshots": 0, "format": "qcow2"},
    ]
    assert fake.calls == [("headroom",)]


def test_a_tiny_disk_still_gets_one_gib(db, fake, files):
    files.made["/pools/%s/d1" % POOL] = (None, MiB)
    planned = datadisks.plan(ctx_for(db), vm(data_disk(1, size=None)))
    assert planned[0]["size_gib"] == 1


def test_a_backing_file_outside_the_disks_pool_is_refused(db, fake, files):
    files.made["/pools/%s/d1" % POOL2] = ("/mnt/%s/tmpl" % POOL, MiB)
    with pytest.raises(exception.Invalid,
                       match="is not on primary storage pool %s" % POOL2):
        datadisks.plan(ctx_for(db), vm(data_disk(1, pool=POOL2)))
    assert fake.calls == []


OFFERING = {"diskofferingid": "off-id", "diskofferingname": "Premium",
            "storage": {"id": POOL, "name": "nfs-1"}}
FULL_MAP = {"off-id": "by-offering-id", "Premium": "by-offering-name",
            POOL: "by-pool-id", "nfs-1": "by-pool-name"}


@pytest.mark.parametrize("options,drop,expected", [
    ({"volume_type": "asked"}, (), "asked"),
    ({}, (), "by-offering-id"),
    ({"volume_type": None}, ("off-id",), "by-offering-name"),
    ({}, ("off-id", "Premium"), "by-pool-id"),
    ({}, ("off-id", "Premium", POOL), "by-pool-name"),
    ({}, ("off-id", "Premium", POOL, "nfs-1"), None),
])
def test_volume_type_precedence(options, drop, expected):
    mapping = {k: v for k, v in FULL_MAP.items() if k not in drop}
    ctx = types.SimpleNamespace(migration={"options": options},
                                conf=conf(mapping))
    assert datadisks.volume_type(ctx, OFFERING) == expected


def test_volume_type_of_a_disk_without_offering_or_pool_is_default():
    ctx = types.SimpleNamespace(migration={"options": None},
                                conf=conf(FULL_MAP))
    assert datadisks.volume_type(ctx, {"storage": None}) is None


def test_an_unknown_volume_type_is_refused_before_quota(db, fake, files):
    files.made["/pools/%s/d1" % POOL] = (None, GiB)
    files.made["/pools/%s/d2" % POOL] = (None, GiB)
    ctx = ctx_for(db, {"Premium": "gold", "off-2": "ssd"})
    with pytest.raises(exception.Invalid) as info:
        datadisks.plan(ctx, vm(data_disk(1, diskofferingname="Premium"),
                               data_disk(2, diskofferingid="off-2")))
    assert ("Cinder has no volume type gold (named by the [cloudstack] "
            "volume_type_map (Premium))") in str(info.value)
    assert fake.calls == [("type", "gold")]


def quota_ctx(db, files, room, fake):
    for n in (1, 2):
        files.made["/pools/%s/d%d" % (POOL, n)] = (None, 2 * GiB)
    fake.room = room
    return ctx_for(db, target_project_id="proj-1")


def test_too_few_gigabytes_in_the_quota_are_refused(db, fake, files):
    ctx = quota_ctx(db, files, (3, None), fake)
    with pytest.raises(exception.Invalid) as info:
        datadisks.plan(ctx, vm(data_disk(1), data_disk(2)))
    assert ("the data disks of CloudStack VM web-1 need 4 GiB (data-1: 2 "
            "GiB, data-2: 2 GiB) but the quota leaves 3 GiB in project "
            "proj-1's Cinder quota; raise the quota or free space there"
            ) in str(info.value)


def test_too_few_volumes_in_the_quota_are_refused(db, fake, files):
    ctx = quota_ctx(db, files, (3, 1), fake)
    with pytest.raises(exception.Invalid) as info:
        datadisks.plan(ctx, vm(data_disk(1), data_disk(2)))
    assert ("need 4 GiB (data-1: 2 GiB, data-2: 2 GiB) but the quota "
            "leaves 3 GiB and 2 volumes but the quota leaves 1 in project "
            "proj-1's Cinder quota") in str(info.value)


@pytest.mark.parametrize("room", [(None, None), (4, 2), (None, 2),
                                  (4, None)])
def test_a_quota_that_holds_them_or_is_unlimited_passes(db, fake, files,
                                                        room):
    ctx = quota_ctx(db, files, room, fake)
    planned = datadisks.plan(ctx, vm(data_disk(1), data_disk(2)))
    assert [d["size_gib"] for d in planned] == [2, 2]


# -- volumes -----------------------------------------------------------------

PLANNED = [
    {"cloudstack_id": "cs-d1", "name": "data-1", "size_gib": 2,
     "volume_type": "ssd", "chain": [src(POOL, "d1")]},
    {"cloudstack_id": "cs-d2", "name": "data-2", "size_gib": 6,
     "volume_type": None, "chain": [src(POOL, "d2"), src(POOL, "t")]},
]


def step_ctx(db, **resources):
    return ctx_for(db, source={"name": "web-1"}, resources=dict(
        {"data_disks": PLANNED, "server_id": "srv", "host": "h"},
        **resources))


def test_the_volumes_step_without_data_disks_does_nothing(db, fake):
    datadisks.volumes(ctx_for(db, resources={"server_id": "srv"}))
    assert fake.calls == []


def test_the_volumes_step_creates_records_then_attaches_in_order(db, fake):
    datadisks.volumes(step_ctx(db))
    creates = [c for c in fake.calls if c[0] == "create"]
    assert creates == [
        ("create", "web-1-data-1", 2, "ssd", "m1", "cs-d1",
         "cs2os migration m1: CloudStack data disk data-1 (cs-d1) of VM "
         "web-1"),
        ("create", "web-1-data-2", 6, None, "m1", "cs-d2",
         "cs2os migration m1: CloudStack data disk data-2 (cs-d2) of VM "
         "web-1"),
    ]
    recorded = [{"cloudstack_id": "cs-d1", "volume_id": "vol-1"},
                {"cloudstack_id": "cs-d2", "volume_id": "vol-2"}]
    assert db.get_migration("m1")["resources"]["volumes"] == recorded
    # Both made volumes were waited for, and recorded before any attach.
    assert ("wait", "vol-1", ("available", "in-use")) in fake.calls
    assert ("wait", "vol-2", ("available", "in-use")) in fake.calls
    assert fake.recorded_when_attaching == [recorded, recorded]
    assert [c for c in fake.calls if c[0] == "attach"] == [
        ("attach", "srv", "vol-1"), ("attach", "srv", "vol-2")]
    assert fake.attached == ["vol-1", "vol-2"]


def test_a_volume_is_recorded_before_the_next_one_is_made(db, fake):
    fake.fail_create_of = "cs-d2"
    with pytest.raises(exception.OpenStackError):
        datadisks.volumes(step_ctx(db))
    assert db.get_migration("m1")["resources"]["volumes"] == [
        {"cloudstack_id": "cs-d1", "volume_id": "vol-1"}]
    assert fake.attached == []


def test_a_retry_reuses_found_volumes_and_attaches_only_the_rest(db, fake):
    # An earlier attempt made and attached data-1, made data-2 and died.
    first = fake.add("cs-d1", "in-use")
    second = fake.add("cs-d2", "available")
    fake.add("cs-d2", "available", migration_id="m-other")
    fake.attached = [first.id]
    datadisks.volumes(step_ctx(db))
    assert [c for c in fake.calls if c[0] in ("create", "wait")] == []
    assert [c for c in fake.calls if c[0] == "attach"] == [
        ("attach", "srv", second.id)]
    assert fake.attached == [first.id, second.id]
    assert db.get_migration("m1")["resources"]["volumes"] == [
        {"cloudstack_id": "cs-d1", "volume_id": first.id},
        {"cloudstack_id": "cs-d2", "volume_id": second.id}]
    events = [e["message"] for e in db.get_migration("m1")["events"]]
    assert events == ["2 Cinder volume(s) attached to server srv: data-1 "
                      "-> %s, data-2 -> %s" % (first.id, second.id)]


def test_a_retry_after_a_crash_mid_attach_waits_for_the_attachment(db,
                                                                   fake):
    # The conductor died after Nova accepted data-2's attachment: the
    # volume is still attaching and will be in-use, never available.
    first = fake.add("cs-d1", "in-use")
    second = fake.add("cs-d2", "attaching")
    fake.settles_at[second.id] = "in-use"
    fake.attached = [first.id, second.id]
    datadisks.volumes(step_ctx(db))
    assert [c for c in fake.calls if c[0] in ("create", "attach")] == []
    assert fake.volumes[second.id].status == "in-use"


# -- sync --------------------------------------------------------------------


def test_sync_asks_the_agent_for_each_disk_in_order_and_records(db):
    calls = []

    class Agent:
        def sync_volume(self, *args):
            calls.append(args)
            return {"target_dev": "vd%s" % "bc"[len(calls) - 1],
                    "files": 1, "bytes_copied": 5, "virtual_size": GiB,
                    "verified": True, "seconds": 1.5}

    ctx = step_ctx(db, volumes=[
        {"cloudstack_id": "cs-d1", "volume_id": "vol-1"},
        {"cloudstack_id": "cs-d2", "volume_id": "vol-2"}])
    ctx.clients.agent = Agent()
    datadisks.sync(ctx)
    assert [c[1:] for c in calls] == [
        ("h", "m1", "srv", "vol-1", PLANNED[0]["chain"], "qcow2"),
        ("h", "m1", "srv", "vol-2", PLANNED[1]["chain"], "qcow2")]
    results = db.get_migration("m1")["result"]["data_disks"]
    assert [(r["name"], r["volume_id"], r["target_dev"], r["verified"],
             r["volume_size_gib"], r["volume_type"]) for r in results] == [
        ("data-1", "vol-1", "vdb", True, 2, "ssd"),
        ("data-2", "vol-2", "vdc", True, 6, None)]


# -- undo --------------------------------------------------------------------


@pytest.mark.parametrize("resources", [
    {"committed": True, "server_id": None},
    {"server_id": "srv"},
])
def test_undo_leaves_volumes_while_committed_or_the_server_exists(
        db, fake, resources):
    fake.add("cs-d1")
    ctx = step_ctx(db, volumes=[{"cloudstack_id": "cs-d1",
                                 "volume_id": "vol-1"}], **resources)
    assert datadisks.undo(ctx) is None
    assert fake.calls == [] and "vol-1" in fake.volumes


def test_undo_without_data_disks_asks_nothing(db, fake):
    ctx = ctx_for(db, resources={"server_id": None})
    assert datadisks.undo(ctx) is None
    assert fake.calls == []


def test_undo_deletes_recorded_and_found_volumes_and_records_none(db, fake):
    recorded = fake.add("cs-d1")
    unrecorded = fake.add("cs-d2")  # made, then the conductor died
    foreign = fake.add("cs-d2", migration_id="m-other")
    ctx = step_ctx(db, server_id=None, volumes=[
        {"cloudstack_id": "cs-d1", "volume_id": recorded.id},
        {"cloudstack_id": "cs-d0", "volume_id": "vol-gone"}])
    message = datadisks.undo(ctx)
    assert message == "deleted volumes %s, %s" % (recorded.id, unrecorded.id)
    assert sorted(c[1] for c in fake.calls if c[0] == "delete") == sorted(
        [recorded.id, unrecorded.id, "vol-gone"])
    assert list(fake.volumes) == [foreign.id]
    assert db.get_migration("m1")["resources"]["volumes"] == []
    # Again: nothing left to delete, nothing said.
    assert datadisks.undo(ctx) is None
