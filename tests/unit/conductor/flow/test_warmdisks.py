"""A warm migration's data disks on the conductor's side
(conductor/flow/warmdisks.py): found in the source domain, one job set
for every disk, the agent's targets prepared, watched, finished and
removed.  Fakes for the domain and the agent; the real thing is
tests/e2e/test_warm_data_disks.py."""

import types

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import warmdisks
from cs2os_agent.sourcehost import blockcopy
from cs2os_agent.sourcehost import multicopy
from tests.unit.conductor.flow import test_datadisks as dd
from tests.unit.conductor.flow.test_datadisks import fake  # noqa: F401,F811
from tests.unit.conductor.flow.test_datadisks import files  # noqa: F401,F811

POOL = "6a1c5e0e-0000-4000-8000-000000000001"
V1 = "0b7e6f4c-2d51-4c7e-9a3b-6a1f0e2d9c11"
V2 = "0b7e6f4c-2d51-4c7e-9a3b-6a1f0e2d9c12"
GIB = 1024 ** 3

XML = """<domain><name>i-2-7-VM</name><devices>
<disk type='file' device='disk'><source file='/mnt/%(p)s/root'/>
<target dev='vda'/></disk>
<disk type='file' device='disk'><source file='/mnt/%(p)s/d1'/>
<target dev='vdb'/>%(mirror)s</disk>
<disk type='file' device='disk'><source file='/mnt/%(p)s/d2'/>
<target dev='vdc'/></disk>
</devices></domain>"""


class Dom:
    def __init__(self, job_on=None, export=None):
        self.job_on, self.export = job_on, export

    def name(self):
        return "i-2-7-VM"

    def XMLDesc(self, flags=0):  # noqa: N802 - libvirt's name
        mirror = ""
        if self.job_on == "vdb":
            mirror = ("<mirror type='network' job='copy'><source "
                      "protocol='nbd' name='%s'/></mirror>" % self.export)
        return XML % {"p": POOL, "mirror": mirror}

    def blockJobInfo(self, disk, flags):  # noqa: N802
        return {"cur": 1, "end": 2} if disk == self.job_on else {}


class Agent:
    def __init__(self, state="exporting"):
        self.calls = []
        self.state = state

    def prepare_volume_mirror(self, ctxt, host, mid, server, volume, src):
        self.calls.append(("prepare", volume, src["virtual_size"]))
        return {"export": warmdisks.export(types.SimpleNamespace(id=mid),
                                           volume),
                "nbd": {"socket": "/tmp/s-%s" % volume}, "qsd_pid": 10,
                "tunnel_pid": 11, "dest_xml": "<disk %s/>" % volume,
                "target_dev": "vdx"}

    def volume_mirror_status(self, ctxt, host, mid, volume):
        return {"state": self.state, "error": "daemon died"}

    def finish_volume_mirror(self, ctxt, host, mid, server, volume):
        self.calls.append(("finish", volume))
        return {"target_dev": "vdb", "virtual_size": 5,
                "closed_seconds": 0.1}

    def abort_volume_mirror(self, ctxt, host, mid, server, volume):
        self.calls.append(("abort", volume))
        return {"aborted": True}


class Ctx:
    def __init__(self, agent=None, committed=False, **resources):
        self.id = "m1"
        self.resources = dict(resources)
        self.committed = committed
        self.clients = types.SimpleNamespace(agent=agent or Agent())
        self.admin_context = None
        self.conf = types.SimpleNamespace(cloudstack=types.SimpleNamespace(
            kvm_ssh_port=22, kvm_ssh_user=None))
        self.events, self.results = [], {}

    def resource(self, **values):
        self.resources.update(values)

    def result(self, **values):
        self.results.update(values)

    def event(self, step, message):
        self.events.append((step, message))

    def guard(self):
        pass


def planned(n, fmt="qcow2"):
    return {"cloudstack_id": "cs-d%d" % n, "name": "data-%d" % n,
            "virtual_size": 5 * n, "format": fmt}


VM = {"name": "web-1", "datadisks": [
    {"id": "cs-d1", "storage": {"id": POOL}, "path": "d1"},
    {"id": "cs-d2", "storage": {"id": POOL}, "path": "d2"}]}


def test_each_data_disk_is_found_in_the_source_domain_by_its_file():
    ctx = Ctx(data_disks=[planned(1), planned(2)])
    assert warmdisks.locate(ctx, Dom(), VM) == [
        {"cloudstack_id": "cs-d1", "name": "data-1", "dev": "vdb",
         "virtual_size": 5},
        {"cloudstack_id": "cs-d2", "name": "data-2", "dev": "vdc",
         "virtual_size": 10}]


RBD_XML = """<domain><name>i-2-7-VM</name><devices>
<disk type='file' device='disk'><source file='/mnt/%s/root'/>
<target dev='vda'/></disk>
<disk type='network' device='disk'><driver name='qemu' type='raw'/>
<source protocol='rbd' name='cloudstack/vol-r'><host name='10.0.0.5'
port='6789'/></source><auth username='admin'><secret type='ceph'
uuid='%s'/></auth><target dev='vdb' bus='virtio'/></disk>
</devices></domain>""" % (POOL, POOL)


class RbdDom(Dom):
    """A running domain with a data disk on RBD, as CloudStack's KVM agent
    writes one; ``capacity``: the size QEMU gives it."""

    def __init__(self, capacity):
        super().__init__()
        self.capacity = capacity

    def XMLDesc(self, flags=0):  # noqa: N802 - libvirt's name
        return RBD_XML

    def blockInfo(self, disk, flags=0):  # noqa: N802
        assert disk == "vdb"
        return [self.capacity, self.capacity, self.capacity]


RBD_VM = {"name": "web-1", "datadisks": [
    {"id": "cs-d1", "path": "vol-r", "storage": {
        "id": "pool-rbd", "type": "RBD", "path": "cloudstack",
        "ipaddress": "10.0.0.5"}}]}


def test_a_data_disk_on_rbd_primary_storage_is_mirrored_from_its_rbd_disk():
    """No refusal for warm any more: the network disk rbd <Ceph pool>/
    <image> is the one the full copy reads, at the size QEMU sees."""
    disk = dict(planned(1, fmt="raw"), virtual_size=GIB + 512, size_gib=2)
    ctx = Ctx(data_disks=[disk])
    assert warmdisks.locate(ctx, RbdDom(GIB + 512), RBD_VM) == [
        {"cloudstack_id": "cs-d1", "name": "data-1", "dev": "vdb",
         "virtual_size": GIB + 512}]
    # CloudStack's size is not what the target must match: QEMU's is.
    assert warmdisks.locate(ctx, RbdDom(GIB), RBD_VM)[0][
        "virtual_size"] == GIB
    # One that outgrew its volume is refused before anything is made.
    with pytest.raises(exception.Invalid) as err:
        warmdisks.locate(ctx, RbdDom(2 * GIB + 1), RBD_VM)
    assert "data disk data-1 is %d bytes in domain i-2-7-VM, more than " \
        "its 2 GiB volume" % (2 * GIB + 1) in str(err.value)
    # A file disk's pool and path name no RBD disk of the domain.
    with pytest.raises(exception.Invalid) as err:
        warmdisks.locate(ctx, RbdDom(GIB), VM)
    assert "has 0 disks on .../%s/d1" % POOL in str(err.value)
    # Nor does another Ceph pool's image.
    other = {"name": "web-1", "datadisks": [dict(
        RBD_VM["datadisks"][0], storage=dict(
            RBD_VM["datadisks"][0]["storage"], path="rbd"))]}
    with pytest.raises(exception.Invalid) as err:
        warmdisks.locate(ctx, RbdDom(GIB), other)
    assert "has 0 RBD disks rbd/vol-r" in str(err.value)


def test_someone_elses_job_on_a_data_disk_is_refused_ours_is_not():
    ctx = Ctx(data_disks=[planned(1)])
    with pytest.raises(exception.Invalid) as err:
        warmdisks.locate(ctx, Dom(job_on="vdb", export="theirs"), VM)
    assert "another block job runs on disk vdb" in str(err.value)
    ctx.resources["volumes"] = [{"cloudstack_id": "cs-d1", "volume_id": V1}]
    ours = Dom(job_on="vdb", export=warmdisks.export(ctx, V1))
    assert warmdisks.locate(ctx, ours, VM)[0]["dev"] == "vdb"


def test_without_data_disks_the_root_job_alone():
    root = object()
    assert warmdisks.job_of(Ctx(), Dom(), root, "e") is root
    assert warmdisks.prepare(Ctx()) == []
    assert warmdisks.target_error(Ctx()) is None
    ctx = Ctx()
    warmdisks.finish(ctx)
    assert ctx.results == {}
    assert warmdisks.undo_targets(Ctx(server_id="s")) is None


def test_with_data_disks_one_job_set_root_first_full_copies_after():
    ctx = Ctx(warm_disks=[{"cloudstack_id": "cs-d1", "dev": "vdb"},
                          {"cloudstack_id": "cs-d2", "dev": "vdc"}],
              volumes=[{"cloudstack_id": "cs-d1", "volume_id": V1},
                       {"cloudstack_id": "cs-d2", "volume_id": V2}])
    dom = Dom()
    root = blockcopy.BlockCopy(dom, "vda")
    js = warmdisks.job_of(ctx, dom, root, "root-export")
    assert isinstance(js, multicopy.JobSet)
    assert [(j.disk, j.flags == blockcopy.FULL_COPY_FLAGS, e)
            for j, e in js.copies][1:] == [
        ("vdb", True, warmdisks.export(ctx, V1)),
        ("vdc", True, warmdisks.export(ctx, V2))]
    assert js.copies[0] == (root, "root-export")


def test_prepare_records_the_targets_before_and_after_the_calls():
    agent = Agent()
    ctx = Ctx(agent, kvm_host="10.0.0.5", socket_owner="64055:64055",
              host="compute-1", server_id="s",
              warm_disks=[{"cloudstack_id": "cs-d1", "dev": "vdb",
                           "virtual_size": 5},
                          {"cloudstack_id": "cs-d2", "dev": "vdc",
                           "virtual_size": 10}],
              volumes=[{"cloudstack_id": "cs-d1", "volume_id": V1},
                       {"cloudstack_id": "cs-d2", "volume_id": V2}])
    dests = warmdisks.prepare(ctx)
    assert dests == ["<disk %s/>" % V1, "<disk %s/>" % V2]
    assert agent.calls == [("prepare", V1, 5), ("prepare", V2, 10)]
    assert [(m["dev"], m["volume_id"], m["qsd_pid"])
            for m in ctx.resources["volume_mirrors"]] == [
        ("vdb", V1, 10), ("vdc", V2, 10)]
    # A target that is not exporting fails the mirror, naming the volume.
    ctx.clients.agent.state = "failed"
    assert warmdisks.target_error(ctx) == "volume %s: daemon died" % V1
    warmdisks.finish(ctx)
    assert [r["volume_id"] for r in ctx.results["data_disks"]] == [V1, V2]
    assert agent.calls[-2:] == [("finish", V1), ("finish", V2)]
    assert warmdisks.undo_targets(ctx) == (
        "removed the mirror targets of volumes %s, %s" % (V1, V2))
    assert agent.calls[-2:] == [("abort", V1), ("abort", V2)]
    assert ctx.resources["volume_mirrors"] == []


def test_no_target_is_removed_after_the_commit():
    agent = Agent()
    ctx = Ctx(agent, committed=True, host="h", server_id="s",
              volume_mirrors=[{"volume_id": V1}])
    assert warmdisks.undo_targets(ctx) is None
    assert agent.calls == []


def test_a_warm_migration_plans_its_data_disks_as_a_cold_one(
        db, fake, files):  # noqa: F811
    files.made.update({"/pools/%s/d1" % dd.POOL: (None, dd.GiB)})
    ctx = dd.ctx_for(db, mode="warm")
    assert dd.datadisks.plan(ctx, dd.vm(dd.data_disk(1))) == [
        {"cloudstack_id": "cs-d1", "name": "data-1", "deviceid": 1,
         "chain": [dd.src(dd.POOL, "d1")], "virtual_size": dd.GiB,
         "size_gib": 1, "volume_type": None, "internal_snapshots": 0,
         "volume_type_chosen_by": "Cinder's default", "format": "qcow2"}]
