"""The warm flow's logic on a real SQLite record, with fake libvirt, agent,
Nova and CloudStack (no process, no libvirtd).

The real thing (KVM source, qemu-storage-daemon, ssh tunnel, Nova) runs in
tests/e2e/test_warm_migration.py; here: the order of every call that
matters (suspend before the job ends, resume before anything else on a
rollback, nothing pivots), checkpoints, resume after a conductor restart,
the D == B digest, the cutover hold, the URI checks.
"""

import contextlib
import hashlib
import os
import types
from xml.sax import saxutils

import libvirt
import pytest

from cs2os_agent import qemu_img
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import exception
from cs2os_agent.conductor import manager
from cs2os_agent.conductor import request
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import guestview
from cs2os_agent.conductor.flow import kvmhost
from cs2os_agent.conductor.flow import runner
from cs2os_agent.conductor.flow import steps
from cs2os_agent.conductor.flow import warm
from cs2os_agent.db import api
from cs2os_agent.db import migration as db_migration
from cs2os_agent.mirror import blockcopy
from cs2os_agent.mirror import target as mirror_target

MID = "11111111-2222-3333-4444-555555555555"
EXPORT = mirror_target.export_name(MID)
RUNNING = libvirt.VIR_DOMAIN_RUNNING
PAUSED = libvirt.VIR_DOMAIN_PAUSED

DOM_XML = """<domain type='kvm'><name>i-2-7-VM</name><devices>
<disk type='file' device='disk'><source file='%(file)s'/>
<target dev='vda' bus='virtio'/>%(mirror)s</disk>
<disk type='file' device='cdrom'><source file='/iso/x.iso'/>
<target dev='hdc' bus='ide'/></disk></devices>
<seclabel type='dynamic' model='dac' relabel='yes'>
<label>+64055:+64055</label></seclabel></domain>"""


class FakeDom:
    """The libvirt calls the flow makes; the job advances on each look."""

    def __init__(self, step=50, end=100):
        self.calls = []
        self.job = None  # {"cur", "end"}
        self.ready = False
        self.export = None
        self.state_ = RUNNING
        self.step = step
        self.end = end
        self.file = "/mnt/pool-1/vol-1"
        # Called on each blockJobInfo: lets a test script the job.
        self.on_info = None

    def name(self):
        return "i-2-7-VM"

    def XMLDesc(self, flags):  # noqa: N802 - libvirt's name
        mirror = ""
        if self.job is not None:
            mirror = ("<mirror type='network' job='copy'%s><source "
                      "protocol='nbd' name=%s/></mirror>"
                      % (" ready='yes'" if self.ready else "",
                         saxutils.quoteattr(self.export)))
        return DOM_XML % {"file": self.file, "mirror": mirror}

    def blockCopy(self, disk, xml, params, flags):  # noqa: N802
        self.calls.append("blockCopy")
        self.export = EXPORT if EXPORT in xml else "other"
        self.job = {"cur": 0, "end": self.end}
        self.params = params

    def blockJobInfo(self, disk, flags):  # noqa: N802
        if self.on_info is not None:
            self.on_info(self)
        if self.job is None:
            return {}
        info = dict(self.job)
        if self.job["cur"] < self.job["end"]:
            self.job["cur"] = min(self.job["end"],
                                  self.job["cur"] + self.step)
        elif self.state_ == RUNNING or self.ready:
            self.ready = True
        return info

    def state(self):
        return [self.state_, 0]

    def suspend(self):
        self.calls.append("suspend")
        self.state_ = PAUSED

    def resume(self):
        self.calls.append("resume")
        self.state_ = RUNNING

    def blockJobAbort(self, disk, flags):  # noqa: N802
        self.calls.append("blockJobAbort(%d)" % flags)
        self.job = None
        self.ready = False


class FakeKvm:
    def __init__(self, dom):
        self.dom = dom
        self.name = "qemu+libssh://root@10.0.0.5/system"
        self.opened = 0

    def domain(self, name):
        if self.dom is None:
            raise exception.SourceDomainNotFound(domain=name, uri=self.name)
        return self.dom


class Agent:
    def __init__(self):
        self.calls = []
        self.status = {"state": "exporting"}
        self.finish_error = None

    def _log(self, name, *args):
        self.calls.append((name,) + args)

    def prepare_mirror(self, ctxt, host, mid, server, source):
        self._log("prepare_mirror", host, mid, server, source)
        return {"export": EXPORT, "target_path": "/i/s/disk.cs2os-mirror",
                "nbd": {"socket": "/tmp/cs2os-nbd-x.sock"}, "qsd_pid": 11,
                "tunnel_pid": 12, "base_proof": {"method": "digest"},
                "dest_xml": blockcopy.nbd_dest_xml(
                    EXPORT, socket="/tmp/cs2os-nbd-x.sock")}

    def mirror_status(self, ctxt, host, mid):
        self._log("mirror_status")
        return dict(self.status)

    def finish_mirror(self, ctxt, host, mid, server):
        self._log("finish_mirror")
        if self.finish_error:
            raise self.finish_error
        return {"bytes_copied": 100, "staged_path": "/i/s/disk.cs2os-staged"}

    def abort_mirror(self, ctxt, host, mid, server):
        self._log("abort_mirror")
        return {"aborted": True}

    def swap_disk(self, ctxt, host, mid, server):
        self._log("swap_disk")
        return {"swapped": True}

    def restore_disk(self, ctxt, host, mid, server):
        self._log("restore_disk")

    def cleanup(self, ctxt, host, mid, server):
        self._log("cleanup")


class Nova:
    def __init__(self, log):
        self.log = log
        self.start_error = None
        self.conn = types.SimpleNamespace(compute=types.SimpleNamespace(
            start_server=self._start))

    def _start(self, server_id):
        self.log.append("nova start")
        if self.start_error:
            raise self.start_error

    def wait_server(self, server_id, status):
        return types.SimpleNamespace(id=server_id, status=status)

    def start_server(self, server_id):
        self._start(server_id)
        return self.wait_server(server_id, "ACTIVE")

    def stop_server(self, server_id):
        self.log.append("nova stop")

    def delete_server(self, server_id):
        self.log.append("nova delete")


class CloudStack:
    def __init__(self, log):
        self.log = log
        self.state = "Running"

    def find_vm(self, vm_id):
        return {"id": vm_id, "name": "web-1", "state": self.state}

    def stop_vm(self, vm_id, forced=False):
        self.log.append("cs stop forced=%s" % forced)
        self.state = "Stopped"

    def start_vm(self, vm_id):
        self.log.append("cs start")
        self.state = "Running"

    def destroy_vm(self, vm_id):
        self.log.append("cs destroy")


class Network:
    def find_port(self, name):
        return None


def make_conf(**conductor):
    values = dict(mirror_max_bandwidth_mbps=0, mirror_ready_timeout=60,
                  mirror_poll_interval=0.001, manual_cutover_timeout=0,
                  image_spool_dir="/nonexistent")
    values.update(conductor)
    return types.SimpleNamespace(
        cloudstack=types.SimpleNamespace(
            kvm_ssh_port=2222, kvm_ssh_user=None,
            kvm_libvirt_uri="qemu+libssh://root@{host}/system?"
            "known_hosts=/k&keyfile=/id"),
        conductor=types.SimpleNamespace(**values))


@pytest.fixture
def db(tmp_path):
    database = api.Database("sqlite:///%s" % (tmp_path / "c.sqlite"))
    db_migration.upgrade(database)
    return database


READY_TO_MIRROR = {
    "host": "cmp-1", "server_id": "srv-1", "image_id": "img-1",
    "kvm_host": "10.0.0.5", "source_domain": "i-2-7-VM",
    "source_disk": "vda", "socket_owner": "64055:64055",
    "overlay_virtual_size": 1 << 30,
    "base_proof": {"algorithm": "guest_sha256", "digest": "ab" * 32,
                   "virtual_size": 1 << 30},
}


class World:
    """One warm migration at step ``mirror`` and everything it talks to."""

    def __init__(self, db, monkeypatch, cutover="auto", step="mirror",
                 resources=None, **conf):
        self.db = db
        self.log = []
        self.dom = FakeDom()
        self.kvm = FakeKvm(self.dom)
        self.agent = Agent()
        self.nova = Nova(self.log)
        self.cloudstack = CloudStack(self.log)
        clients = types.SimpleNamespace(
            admin_context=None, agent=self.agent, openstack=self.nova,
            cloudstack=self.cloudstack, network=Network())
        db.create_migration({
            "id": MID, "source_ref": "web-1", "mode": "warm",
            "state": "running", "step": step,
            "options": {"networks": {}, "cutover": cutover},
            "source": {}, "source_vm_id": "vm-1", "source_vm_name": "web-1",
            "resources": dict(READY_TO_MIRROR, **(resources or {})),
            "result": {}})
        self.ctx = flow_context.FlowContext(
            db.get_migration(MID), db, make_conf(**conf), clients)

        @contextlib.contextmanager
        def connect(conf, host):
            assert host == "10.0.0.5"
            self.kvm.opened += 1
            yield self.kvm

        monkeypatch.setattr(kvmhost, "connect", connect)
        monkeypatch.setattr(warm, "AGENT_CHECK_INTERVAL", 0)
        monkeypatch.setattr(warm, "SETTLE_POLL", 0)

    def run(self):
        runner.run(self.ctx)
        return self.db.get_migration(MID)

    def agent_calls(self):
        return [c[0] for c in self.agent.calls if c[0] != "mirror_status"]


# -- the whole flow --------------------------------------------------------


def test_warm_runs_its_own_steps_and_cold_is_untouched():
    assert [n for n, _ in runner.flow({"mode": "warm"})[0]] == [
        "validate", "image", "ports", "boot", "mirror", "ready", "cutover",
        "finish", "swap", "start", "stop_source"]
    assert runner.flow({"mode": "cold"}) == (steps.COLD, steps.ROLLBACK)
    assert runner.flow({}) == (steps.COLD, steps.ROLLBACK)
    # The cold steps are the same functions, not copies.
    warm_steps = dict(warm.WARM)
    for name in ("ports", "boot", "swap"):
        assert warm_steps[name] is dict(steps.COLD)[name]


def test_auto_cutover_end_to_end(db, monkeypatch):
    w = World(db, monkeypatch, mirror_max_bandwidth_mbps=80)
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    # Suspend, then end the job without pivot (flags 0); never resumed:
    # CloudStack stops the frozen VM after Nova started the server.
    assert w.dom.calls == ["blockCopy", "suspend", "blockJobAbort(0)"]
    assert w.dom.params == {
        libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH: 80 * 125000}
    assert w.agent_calls() == ["prepare_mirror", "finish_mirror",
                               "swap_disk", "cleanup"]
    assert w.log == ["nova start", "cs stop forced=True"]
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
    assert result["mirror"]["bytes"] == 100
    assert result["source_stopped"] is True
    assert (done["bytes_done"], done["bytes_total"]) == (100, 100)
    messages = [e["message"] for e in done["events"]]
    assert any(m.startswith("READY: ") for m in messages)


def test_delete_source_destroys_after_the_stop(db, monkeypatch):
    w = World(db, monkeypatch)
    db.update_migration(MID, {"delete_source": True})
    w.ctx.migration["delete_source"] = True
    assert w.run()["result"]["source_deleted"] is True
    assert w.log == ["nova start", "cs stop forced=True", "cs destroy"]


def test_manual_cutover_holds_until_requested(db, monkeypatch):
    w = World(db, monkeypatch, cutover="manual")
    mgr = manager.ConductorManager(db, engine=None)
    looks = []

    def operator(dom):
        looks.append(dom.ready)
        if len(looks) == 30:
            mgr.cutover_migration(cs2os_context.RequestContext(
                user_id="ops"), MID)

    w.dom.on_info = operator
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


def test_failure_after_the_cutover_resumes_the_source_first(db,
                                                            monkeypatch):
    w = World(db, monkeypatch)
    w.agent.finish_error = exception.StorageDaemonDied(
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


def test_failure_once_nova_was_asked_to_start_resumes_the_source_last(
        db, monkeypatch):
    w = World(db, monkeypatch)
    w.nova.start_error = exception.OpenStackError(operation="start",
                                                  reason="no")
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "start")
    # The server may have run the migrated disk: it goes first.
    assert done["result"]["rolled_back"] == [
        "removed the mirror target on cmp-1",
        "put Nova's original disk back on server srv-1",
        "deleted server srv-1", "resumed CloudStack VM web-1"]
    assert w.dom.calls[-1] == "resume"
    assert "cs start" not in w.log


def test_failure_after_commit_never_restarts_the_source(db, monkeypatch):
    w = World(db, monkeypatch)

    def stop_fails(vm_id, forced=False):
        raise exception.CloudStackJobFailed(
            job_id="j", command="stopVirtualMachine", target=vm_id,
            errorcode=530, errortext="host down")

    w.cloudstack.stop_vm = stop_fails
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "stop_source")
    assert done["result"]["rolled_back"] == []
    assert "resume" not in w.dom.calls and "nova delete" not in w.log


def test_a_write_racing_the_cutover_is_retried_not_failed(db, monkeypatch):
    w = World(db, monkeypatch)
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


def test_conductor_restart_mid_cutover_finishes_a_frozen_ready_job(
        db, monkeypatch):
    w = World(db, monkeypatch, step="cutover", resources={
        "mirror_prepared": True, "mirror_started": True,
        "mirror_ready": True, "cutover_started": 1000.0,
        "source_suspended": True})
    w.dom.job, w.dom.ready, w.dom.export = {"cur": 100, "end": 100}, True, \
        EXPORT
    w.dom.state_ = PAUSED
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert w.dom.calls == ["blockJobAbort(0)"]
    assert done["result"]["cutover"]["resumed"] is True
    assert done["resources"]["source_down_at"] == 1000.0


def test_conductor_restart_mid_cutover_with_the_job_gone_fails_safe(
        db, monkeypatch):
    w = World(db, monkeypatch, step="cutover", resources={
        "mirror_prepared": True, "mirror_started": True,
        "mirror_ready": True, "cutover_started": 1000.0,
        "source_suspended": True})
    w.dom.state_ = PAUSED
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "cutover")
    assert "cannot be proven complete" in done["error"]
    assert w.dom.calls == ["resume"]
    assert done["result"]["rolled_back"][0] == "resumed CloudStack VM web-1"


def test_conductor_restart_during_the_hold_adopts_a_whole_mirror(
        db, monkeypatch):
    w = World(db, monkeypatch, step="ready", resources={
        "mirror_prepared": True, "mirror_started": True,
        "mirror_ready": True})
    w.dom.job, w.dom.ready, w.dom.export = {"cur": 100, "end": 100}, True, \
        EXPORT
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert w.dom.calls == ["suspend", "blockJobAbort(0)"]
    assert "prepare_mirror" not in w.agent_calls()


def test_conductor_restart_during_the_hold_restarts_a_broken_mirror(
        db, monkeypatch):
    w = World(db, monkeypatch, step="ready", resources={
        "mirror_prepared": True, "mirror_started": True,
        "mirror_ready": True})
    done = w.run()  # no job any more: it starts again
    assert done["state"] == "succeeded", done["error"]
    assert w.dom.calls == ["blockCopy", "suspend", "blockJobAbort(0)"]
    assert w.agent_calls()[0] == "prepare_mirror"


def test_mirror_step_ends_an_earlier_attempts_job_first(db, monkeypatch):
    w = World(db, monkeypatch)
    w.dom.job, w.dom.export = {"cur": 10, "end": 100}, EXPORT
    assert w.run()["state"] == "succeeded"
    assert w.dom.calls[:2] == ["blockJobAbort(0)", "blockCopy"]


def test_agent_busy_with_our_own_prepare_is_waited_for(db, monkeypatch):
    w = World(db, monkeypatch)
    monkeypatch.setattr(warm, "BUSY_POLL", 0)
    real = w.agent.prepare_mirror
    tries = []

    def busy_once(*args):
        tries.append(1)
        if len(tries) == 1:
            raise exception.MigrationBusy(instance_uuid="srv-1", owner=MID,
                                          migration_id=MID)
        return real(*args)

    w.agent.prepare_mirror = busy_once
    assert w.run()["state"] == "succeeded"
    assert len(tries) == 2


# -- validate and the D == B digest ------------------------------------------


def _validated(db, monkeypatch, vm_state="Running", dom_state=RUNNING,
               foreign_job=False):
    w = World(db, monkeypatch, step="validate", resources={})
    vm = {"id": "vm-1", "name": "web-1", "state": vm_state,
          "instancename": "i-2-7-VM",
          "host": {"ipaddress": "10.0.0.5"},
          "root_volume": {"path": "vol-1", "storage": {"id": "pool-1"}}}

    def cold_validate(ctx):
        ctx.save(source=vm)

    monkeypatch.setattr(steps, "validate", cold_validate)
    w.dom.state_ = dom_state
    if foreign_job:
        w.dom.job, w.dom.export = {"cur": 1, "end": 9}, "someone-else"
    warm.validate(w.ctx)
    return w.ctx.resources


def test_validate_records_the_source_domain(db, monkeypatch):
    res = _validated(db, monkeypatch)
    assert (res["kvm_host"], res["source_domain"], res["source_disk"],
            res["socket_owner"]) == ("10.0.0.5", "i-2-7-VM", "vda",
                                     "64055:64055")


@pytest.mark.parametrize("kwargs, words", [
    ({"vm_state": "Stopped"}, "use mode cold"),
    ({"dom_state": PAUSED}, "is paused"),
    ({"foreign_job": True}, "another block job runs on disk vda"),
])
def test_validate_refuses(db, monkeypatch, kwargs, words):
    with pytest.raises(exception.Invalid) as err:
        _validated(db, monkeypatch, **kwargs)
    assert words in str(err.value)


class Glance:
    def __init__(self, properties):
        self.image = types.SimpleNamespace(id="img-1",
                                           properties=properties)
        self.updates = []

    def get_image(self, image_id):
        return self.image

    def update_image(self, image, **props):
        self.updates.append(props)


def _image_world(db, monkeypatch, properties):
    w = World(db, monkeypatch, step="image", resources={
        "template_path": "/mnt/pool-1/tmpl-1", "base_proof": None})
    w.ctx.migration["source"] = {"root_volume": {"storage": {"id": "p"}}}
    glance = Glance(properties)
    w.nova.conn.image = glance
    monkeypatch.setattr(steps, "image", lambda ctx: None)
    return w, glance


def test_image_reuses_the_recorded_guest_digest(db, monkeypatch):
    w, glance = _image_world(db, monkeypatch, {
        warm.GUEST_DIGEST_KEY: "cd" * 32, warm.GUEST_SIZE_KEY: "4096"})
    monkeypatch.setattr(warm.transfer, "get_source", None)  # never read
    warm.image(w.ctx)
    assert w.ctx.resources["base_proof"] == {
        "algorithm": "guest_sha256", "digest": "cd" * 32,
        "virtual_size": 4096}
    assert glance.updates == []


def test_image_hashes_the_template_once_and_records_it(db, monkeypatch,
                                                       tmp_path):
    w, glance = _image_world(db, monkeypatch, {})
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    w.ctx.conf.conductor.image_spool_dir = str(spool_dir)
    read = []

    @contextlib.contextmanager
    def get_source(source, conf):
        read.append(source)
        yield "src"

    def spool(ctx, src, path):
        with open(path, "wb") as f:
            f.write(b"qcow2")

    monkeypatch.setattr(warm.transfer, "get_source", get_source)
    monkeypatch.setattr(warm.sources, "source_for",
                        lambda conf, vm, path: {"path": path})
    monkeypatch.setattr(steps, "spool", spool)
    monkeypatch.setattr(guestview, "guest_digest", lambda path, fmt, d: {
        "algorithm": "guest_sha256", "digest": "ef" * 32,
        "virtual_size": 8192, "method": "map"})
    warm.image(w.ctx)
    assert read == [{"path": "/mnt/pool-1/tmpl-1"}]
    assert glance.updates == [{warm.GUEST_DIGEST_KEY: "ef" * 32,
                               warm.GUEST_SIZE_KEY: "8192"}]
    assert w.ctx.resources["base_proof"]["digest"] == "ef" * 32
    assert os.listdir(spool_dir) == []  # the spool is gone


# -- the template's guest view -----------------------------------------------


def _qcow2_like(tmp_path):
    """A file with two data runs; extents as qemu-img map would say."""
    path = tmp_path / "b.qcow2"
    with open(path, "wb") as f:
        f.write(b"H" * 4096 + b"A" * 8192 + b"B" * 4096)
    extents = [
        {"start": 0, "length": 8192, "depth": 0, "data": True,
         "zero": False, "offset": 4096},
        {"start": 8192, "length": 100000, "depth": 0, "data": False,
         "zero": True},
        {"start": 108192, "length": 4096, "depth": 0, "data": True,
         "zero": False, "offset": 12288},
        {"start": 112288, "length": 512, "depth": 0, "data": True,
         "zero": True, "offset": 0},
    ]
    view = b"A" * 8192 + bytes(100000) + b"B" * 4096 + bytes(512)
    return str(path), extents, view


def test_guest_digest_reads_data_where_map_says(tmp_path, monkeypatch):
    path, extents, view = _qcow2_like(tmp_path)
    monkeypatch.setattr(qemu_img, "info", lambda p, f: {
        "virtual-size": len(view), "format-specific": {"data": {}}})
    monkeypatch.setattr(qemu_img, "map", lambda p, f: extents)
    got = guestview.guest_digest(path, "qcow2", str(tmp_path))
    assert got == {"algorithm": "guest_sha256",
                   "digest": hashlib.sha256(view).hexdigest(),
                   "virtual_size": len(view), "method": "map"}


def test_guest_digest_converts_what_map_cannot_place(tmp_path, monkeypatch):
    path, extents, view = _qcow2_like(tmp_path)
    del extents[2]["offset"]  # a compressed cluster
    monkeypatch.setattr(qemu_img, "info", lambda p, f: {
        "virtual-size": len(view)})
    monkeypatch.setattr(qemu_img, "map", lambda p, f: extents)
    ran = []

    def convert(args, **kwargs):
        ran.append(args[:5])
        with open(args[-1], "wb") as f:
            f.write(view[:-512])  # qemu-img may stop before a zero tail

    monkeypatch.setattr(qemu_img, "_execute", convert)
    got = guestview.guest_digest(path, "qcow2", str(tmp_path))
    assert ran == [["convert", "-f", "qcow2", "-O", "raw"]]
    assert got["digest"] == hashlib.sha256(view).hexdigest()
    assert got["method"] == "convert"
    assert sorted(os.listdir(tmp_path)) == ["b.qcow2"]


@pytest.mark.parametrize("info, words", [
    ({"encrypted": True}, "encrypted"),
    ({"format-specific": {"data": {"data-file": "/etc/shadow"}}},
     "external data file"),
    ({"backing-filename": "/x"}, "backing file"),
])
def test_guest_digest_refuses_images_whose_offsets_lie(tmp_path, monkeypatch,
                                                       info, words):
    monkeypatch.setattr(qemu_img, "info",
                        lambda p, f: dict(info, **{"virtual-size": 1}))
    with pytest.raises(exception.Invalid) as err:
        guestview.guest_digest(str(tmp_path / "x"), "qcow2", str(tmp_path))
    assert words in str(err.value)


# -- the KVM host's URI and domain -------------------------------------------


def test_uri_for_fills_in_the_host():
    template = ("qemu+libssh://root@{host}:2222/system?keyfile=/id&"
                "known_hosts=/kh&known_hosts_verify=normal")
    assert kvmhost.uri_for(template, "10.0.0.5") == template.replace(
        "{host}", "10.0.0.5")
    assert "root@[fd00::5]:2222" in kvmhost.uri_for(template, "fd00::5")
    assert kvmhost.redact(kvmhost.uri_for(template, "h")) == \
        "qemu+libssh://root@h:2222/system"
    assert kvmhost.uri_for("qemu+ssh://root@{host}/system", "h")
    assert kvmhost.uri_for("qemu:///system?x={host}", "h")


@pytest.mark.parametrize("template, words", [
    ("qemu+ssh://root@h/system", "must contain {host}"),
    ("qemu+ssh://root@{host}/system?no_verify=1", "no_verify"),
    ("qemu+libssh://root@{host}/system?known_hosts_verify=ignore",
     "known_hosts_verify=ignore"),
    ("qemu+libssh2://root@{host}/system?known_hosts_verify=auto",
     "known_hosts_verify=auto"),
])
def test_uri_for_refuses_unverified_host_keys(template, words):
    with pytest.raises(exception.Invalid) as err:
        kvmhost.uri_for(template, "10.0.0.5")
    assert words in str(err.value)


@pytest.mark.parametrize("host", ["", None, "a/b", "u@h", "h?x"])
def test_uri_for_refuses_odd_host_addresses(host):
    with pytest.raises(exception.Invalid):
        kvmhost.uri_for("qemu+ssh://{host}/system", host)


def test_root_disk_and_mirror_export_from_the_live_xml():
    dom = FakeDom()
    assert kvmhost.root_disk(dom, "pool-1", "vol-1") == "vda"
    # The stand-in's layout: the host's /mnt lives under another root.
    dom.file = "/var/tmp/x/mnt/pool-1/vol-1"
    assert kvmhost.root_disk(dom, "pool-1", "vol-1") == "vda"
    with pytest.raises(exception.Invalid):
        kvmhost.root_disk(dom, "pool-2", "vol-1")
    assert kvmhost.mirror_export(dom, "vda") is None
    dom.blockCopy("vda", "name='%s'" % EXPORT, {}, 0)
    assert kvmhost.mirror_export(dom, "vda") == EXPORT
    assert kvmhost.mirror_export(dom, "vdb") is None


# -- the blockcopy cutover waits for nothing left to copy ---------------------


def test_cutover_ends_the_job_only_once_everything_is_copied():
    dom = FakeDom()
    dom.job, dom.ready, dom.export = {"cur": 100, "end": 100}, True, EXPORT
    job = blockcopy.BlockCopy(dom)
    looks = []

    def write_in_flight(d):
        # A write that raced the suspend: queued for the background copy.
        if d.state_ == PAUSED and PAUSED not in looks:
            d.job = {"cur": 100, "end": 164}
            d.step = 32
        looks.append(d.state_)

    dom.on_info = write_in_flight
    job.cutover()
    assert dom.calls == ["suspend", "blockJobAbort(0)"]
    # It looked until cur reached end (100 -> 132 -> 164), then ended it.
    assert looks.count(PAUSED) == 3


# -- the request and the cutover action ---------------------------------------


def test_request_defaults_a_warm_cutover_to_auto():
    assert request.validate({"source": "vm", "mode": "warm"})["cutover"] \
        == "auto"
    assert "cutover" not in request.validate({"source": "vm"})


CTXT = cs2os_context.RequestContext(user_id="ops", project_id="p1")


@pytest.fixture
def mgr(db):
    engine = types.SimpleNamespace(submit=lambda mid: None)
    return manager.ConductorManager(db, engine)


def test_cutover_action_is_recorded_once_and_cleared_by_retry(mgr):
    m = mgr.create_migration(CTXT, {"source": "vm", "mode": "warm",
                                    "cutover": "manual"})
    assert m["options"]["cutover"] == "manual"
    mgr.db.update_migration(m["id"], {"state": "running", "step": "ready"})
    first = mgr.cutover_migration(CTXT, m["id"])
    assert first["options"]["cutover_requested"]["by"] == "ops"
    again = mgr.cutover_migration(CTXT, m["id"])
    assert again["options"]["cutover_requested"] == \
        first["options"]["cutover_requested"]
    assert [e["message"] for e in again["events"]].count(
        "cutover requested by ops") == 1
    mgr.db.update_migration(m["id"], {"state": "failed"})
    retried = mgr.retry_migration(CTXT, m["id"])
    assert "cutover_requested" not in retried["options"]
    assert retried["options"]["cutover"] == "manual"


@pytest.mark.parametrize("request_, values, words", [
    ({"source": "vm"}, {}, "only warm migrations have a cutover"),
    ({"source": "vm", "mode": "warm"}, {"state": "succeeded"},
     "is succeeded at step"),
    ({"source": "vm", "mode": "warm"}, {"state": "running", "step": "swap"},
     "is running at step swap"),
    ({"source": "vm", "mode": "warm"},
     {"state": "running", "step": "cutover"}, "at step cutover"),
])
def test_cutover_action_refused(mgr, request_, values, words):
    m = mgr.create_migration(CTXT, request_)
    if values:
        mgr.db.update_migration(m["id"], values)
    with pytest.raises(exception.MigrationStateConflict) as err:
        mgr.cutover_migration(CTXT, m["id"])
    assert words in str(err.value)
