"""The warm flow's logic on a real SQLite record, with fake libvirt, agent,
Nova and CloudStack (no process, no libvirtd).

The real thing (KVM source, qemu-storage-daemon, ssh tunnel, Nova) runs in
tests/e2e/test_warm_migration.py; here: the order of every call that
matters (suspend before the job ends, resume before anything else on a
rollback, nothing pivots), checkpoints, resume after a conductor restart,
the D == B digest, the cutover hold, the URI checks.  Both cutover
methods: "force" (suspend, end the job) and "shutdown" (CloudStack stops
the VM; the real SourceEndWatch judges QEMU events scripted from a real
host's).
"""

import contextlib
import hashlib
import json
import os
import time
import types
from xml.sax import saxutils

import libvirt
import pytest

from cs2os_agent import guestview
from cs2os_agent import qemu_img
from cs2os_agent.cloudstack import client as cs_client
from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.common import nbd
from cs2os_agent.conductor import manager
from cs2os_agent.conductor import request
from cs2os_agent.conductor.flow import cold
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import cutover as cutover_step
from cs2os_agent.conductor.flow import image as image_step
from cs2os_agent.conductor.flow import mirroring
from cs2os_agent.conductor.flow import prepare
from cs2os_agent.conductor.flow import runner
from cs2os_agent.conductor.flow import source
from cs2os_agent.conductor.flow import warm
from cs2os_agent.sourcehost import blockcopy
from cs2os_agent.sourcehost import kvmhost
from cs2os_agent.sourcehost import sourceend

MID = "11111111-2222-3333-4444-555555555555"
EXPORT = nbd.export_name(MID)
RUNNING = libvirt.VIR_DOMAIN_RUNNING
PAUSED = libvirt.VIR_DOMAIN_PAUSED
SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF

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


class FakeConn:
    """The block job event registrations JobEvents makes."""

    def __init__(self):
        self.callbacks = {}

    def domainEventRegisterAny(self, dom, event, callback, opaque):  # noqa
        assert event == libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2
        callback_id = len(self.callbacks) + 1
        self.callbacks[callback_id] = (dom, callback)
        return callback_id

    def domainEventDeregisterAny(self, callback_id):  # noqa: N802
        del self.callbacks[callback_id]


class FakeKvm:
    def __init__(self, dom):
        self.dom = dom
        self.conn = FakeConn()
        self.name = "qemu+libssh://root@10.0.0.5/system"
        self.opened = 0

    def domain(self, name):
        if self.dom is None:
            raise mirror_errors.SourceDomainNotFound(domain=name,
                                                     uri=self.name)
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
                "dest_xml": nbd.dest_xml(
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
        return {"restored": True}

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

    def request_start(self, server_id):
        self._start(server_id)

    def stop_server(self, server_id):
        self.log.append("nova stop")

    def delete_server(self, server_id):
        self.log.append("nova delete")


class CloudStack:
    """The client's calls, as the real one behaves: a clean stop is a job
    (stop_vm_async) that poll_job asks about once and wait_for_job (the
    real client's own loop) waits for; the VM is Stopped once it succeeded.

    ``stop_job``: what the successive polls of the next stop job find:
    "pending", "succeeded", a CloudStackJobFailed (the job failed: every
    later poll says so too, and the VM is ``failed_stop_leaves``) or a
    CloudStackUnreachable (this poll only).  After those: ``stop_job_end``.
    """

    def __init__(self, log):
        self.log = log
        self.state = "Running"
        # What the KVM host sees of a stop or start (set by World).
        self.on_stop = self.on_start = lambda forced=False: None
        self.on_stopped = lambda: None  # a stop job succeeded
        self.job_poll_interval = 0.005
        self.job_timeout = 5.0
        self.stop_job = []
        self.stop_job_end = "succeeded"
        self.failed_stop_leaves = "Running"
        self.jobs = {}  # id -> {"script", "end", "outcome"}
        self.polls = []  # the job id of each queryAsyncJobResult

    def find_vm(self, vm_id):
        return {"id": vm_id, "name": "web-1", "state": self.state}

    def stop_vm(self, vm_id, forced=False):
        self.log.append("cs stop forced=%s" % forced)
        self.on_stop(forced)
        self.state = "Stopped"

    def add_stop_job(self, script=(), end="succeeded"):
        job_id = "stop-job-%d" % (len(self.jobs) + 1)
        self.jobs[job_id] = {"script": list(script), "end": end,
                             "outcome": None}
        return job_id

    def stop_vm_async(self, vm_id):
        assert vm_id == "vm-1"
        self.log.append("cs stop forced=False")
        job_id = self.add_stop_job(self.stop_job, self.stop_job_end)
        self.on_stop(False)
        return job_id

    def poll_job(self, job_id, command="job", target=""):
        assert (command, target) == ("stopVirtualMachine", "web-1")
        self.polls.append(job_id)
        # A flow that polls on and on fails, rather than hangs, the test.
        assert len(self.polls) < 1000, "polled %s forever" % job_id
        job = self.jobs[job_id]
        if job["outcome"] is None:
            found = job["script"].pop(0) if job["script"] else job["end"]
            if isinstance(found, cloudstack_errors.CloudStackUnreachable):
                raise found
            if found != "pending":
                job["outcome"] = found
                if found == "succeeded":
                    self.state = "Stopped"
                    self.on_stopped()
                else:
                    self.state = self.failed_stop_leaves
        if job["outcome"] is None:
            return None
        if job["outcome"] == "succeeded":
            return {"virtualmachine": self.find_vm("vm-1")}
        raise job["outcome"]

    def wait_for_job(self, job_id, command="job", target=""):
        self.log.append("cs wait %s" % job_id)
        return cs_client.CloudStackClient.wait_for_job(self, job_id, command,
                                                       target)

    def start_vm(self, vm_id):
        self.log.append("cs start")
        if any(job["outcome"] is None for job in self.jobs.values()):
            # CloudStack runs one job at a time on a VM.
            raise cloudstack_errors.CloudStackJobFailed(
                job_id="start-job", command="startVirtualMachine",
                target=vm_id, errorcode=530, errortext="a stop job runs")
        self.on_start()
        self.state = "Running"

    def destroy_vm(self, vm_id):
        self.log.append("cs destroy")

    def unmanage_vm(self, vm_id):
        self.log.append("cs unmanage")


class Network:
    def find_port(self, name, network_id=None, mac=None):
        return None


def make_conf(**conductor):
    values = dict(mirror_max_bandwidth_mbps=0, mirror_ready_timeout=60,
                  mirror_poll_interval=0.001, manual_cutover_timeout=0,
                  image_spool_dir="/nonexistent", agent_restart_timeout=30,
                  rollback_attempts=1)
    values.update(conductor)
    return types.SimpleNamespace(
        cloudstack=types.SimpleNamespace(
            kvm_ssh_port=2222, kvm_ssh_user=None, unmanage_source=True,
            kvm_libvirt_uri="qemu+libssh://root@{host}/system?"
            "known_hosts=/k&keyfile=/id"),
        conductor=types.SimpleNamespace(**values))


READY_TO_MIRROR = {
    "host": "cmp-1", "server_id": "srv-1", "image_id": "img-1",
    "kvm_host": "10.0.0.5", "source_domain": "i-2-7-VM",
    "source_disk": "vda", "socket_owner": "64055:64055",
    "overlay_virtual_size": 1 << 30,
    "base_proof": {"algorithm": "guest_sha256", "digest": "ab" * 32,
                   "virtual_size": 1 << 30},
}


def qmp(name, **data):
    return (name, data)


JOB = "copy-vda-libvirt-1-format"
POWERDOWN = qmp("POWERDOWN")
GUEST_SHUTDOWN = qmp("SHUTDOWN", guest=True, reason="guest-shutdown")
HOST_SHUTDOWN = qmp("SHUTDOWN", guest=False, reason="host-signal")
CANCELLED = qmp("BLOCK_JOB_CANCELLED", device=JOB, len=100, offset=100,
                speed=0, type="mirror")
# QEMU's events on a real host when CloudStack stopped a guest that shut
# down (tests/unit/test_mirror_sourceend.py has them all).
CLEAN_END = [POWERDOWN, GUEST_SHUTDOWN, qmp("STOP"),
             qmp("JOB_STATUS_CHANGE", id=JOB, status="standby"),
             qmp("JOB_STATUS_CHANGE", id=JOB, status="ready"),
             HOST_SHUTDOWN,
             qmp("JOB_STATUS_CHANGE", id=JOB, status="aborting"),
             CANCELLED,
             qmp("JOB_STATUS_CHANGE", id=JOB, status="concluded"),
             qmp("JOB_STATUS_CHANGE", id=JOB, status="null")]
# The target's daemon died before a guest write; then the domain ended.
LOST_WRITE_END = [
    qmp("BLOCK_JOB_ERROR", device=JOB, operation="write", action="report"),
    HOST_SHUTDOWN, CANCELLED]


class ScriptedSourceEnd(sourceend.SourceEndWatch):
    """The real watch and verdict; libvirt's registration left out.  The
    world feeds it QEMU's events when CloudStack stops the VM."""

    world = None

    def __enter__(self):
        assert self.conn is self.world.kvm.conn and self.disk == "vda"
        self.world.watches.append(self)
        self.open = True
        return self

    def __exit__(self, *exc_info):
        self.open = False


class World:
    """One warm migration at step ``mirror`` and everything it talks to.

    ``method``: the request's cutover method (None: the default,
    shutdown).  A clean stop feeds ``source_end`` (QEMU's events) to the
    watch as it is submitted, then ends the domain with ``stopped_detail``
    unless None.  A domain still there ends (``reap_detail``) when
    CloudStack's stop job succeeds: libvirt reaped QEMU; ``reap_detail``
    None: it never ends.
    """

    def __init__(self, db, monkeypatch, cutover="auto", step="mirror",
                 resources=None, method=None, **conf):
        self.db = db
        self.log = []
        self.dom = FakeDom()
        self.kvm = FakeKvm(self.dom)
        self.agent = Agent()
        self.nova = Nova(self.log)
        self.cloudstack = CloudStack(self.log)
        self.cloudstack.on_stop = self._source_stops
        self.cloudstack.on_start = self._source_starts
        self.cloudstack.on_stopped = self._source_reaped
        self.watches = []
        self.source_end = CLEAN_END
        # As on a real host: the job ends after the guest's shutdown, the
        # domain when CloudStack's job has seen QEMU reaped.
        self.stopped_detail = None
        self.reap_detail = libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN
        self.clients = types.SimpleNamespace(
            admin_context=None, agent=self.agent, openstack=self.nova,
            cloudstack=self.cloudstack, network=Network())
        options = {"networks": {}, "cutover": cutover}
        if method:
            options["cutover_method"] = method
        db.create_migration({
            "id": MID, "source_ref": "web-1", "mode": "warm",
            "state": "running", "step": step, "options": options,
            "source": {}, "source_vm_id": "vm-1", "source_vm_name": "web-1",
            "resources": dict(READY_TO_MIRROR, **(resources or {})),
            "result": {}})
        self.conf = make_conf(**conf)
        self.ctx = flow_context.FlowContext(
            db.get_migration(MID), db, self.conf, self.clients)
        monkeypatch.setattr(ScriptedSourceEnd, "world", self)
        monkeypatch.setattr(cutover_step.sourceend, "SourceEndWatch",
                            ScriptedSourceEnd)

        @contextlib.contextmanager
        def connect(conf, host):
            assert host == "10.0.0.5"
            self.kvm.opened += 1
            yield self.kvm

        monkeypatch.setattr(kvmhost, "connect", connect)
        monkeypatch.setattr(mirroring, "AGENT_CHECK_INTERVAL", 0)
        monkeypatch.setattr(cutover_step, "SETTLE_POLL", 0)
        # The scripted domain ends within the stop job's poll: a test
        # that waits longer is broken (or means to say so with its own).
        monkeypatch.setattr(cutover_step, "DOMAIN_END_TIMEOUT", 2.0)

    def _source_stops(self, forced):
        watching = [w for w in self.watches if w.open]
        if forced or not watching:
            return
        (watch,) = watching
        dom = self.dom
        for i, (name, data) in enumerate(self.source_end):
            if name == "SHUTDOWN" and i:
                time.sleep(0.01)  # the guest takes its time
            if name == "SHUTDOWN":
                # libvirt's state until it has reaped QEMU.
                dom.state_ = libvirt.VIR_DOMAIN_SHUTDOWN
            if name in ("BLOCK_JOB_CANCELLED", "BLOCK_JOB_COMPLETED"):
                dom.job, dom.ready = None, False  # libvirt drops it
            watch._on_qmp(self.kvm.conn, dom, name, 0, 0, json.dumps(data),
                          None)
        if self.stopped_detail is not None:
            time.sleep(0.01)  # libvirt reaps QEMU
            self._domain_ends(self.stopped_detail)

    def _domain_ends(self, detail):
        # QEMU's exit ended the job; CloudStack's domains are transient.
        dom = self.dom
        dom.job, dom.ready, dom.state_ = None, False, SHUTOFF
        self.kvm.dom = None
        for watch in self.watches:
            if watch.open:
                watch._on_lifecycle(self.kvm.conn, dom,
                                    libvirt.VIR_DOMAIN_EVENT_STOPPED,
                                    detail, None)

    def _source_reaped(self):
        if self.kvm.dom is not None and self.reap_detail is not None:
            self._domain_ends(self.reap_detail)

    def _source_starts(self):
        self.dom.state_ = RUNNING
        self.kvm.dom = self.dom

    def run(self):
        runner.run(self.ctx)
        return self.db.get_migration(MID)

    def operator_cuts_over(self, after_looks, method=None):
        """The operator's cutover action (through the conductor's RPC
        handler) once the job was looked at ``after_looks`` times; returns
        whether it was READY at each look."""
        mgr = manager.ConductorManager(self.db, engine=None)
        looks = []

        def operator(dom):
            looks.append(dom.ready)
            if len(looks) == after_looks:
                mgr.cutover_migration(cs2os_context.RequestContext(
                    user_id="ops"), MID, method)

        self.dom.on_info = operator
        return looks

    def rerun(self, step):
        """A retried attempt that got back to ``step`` (its validate to
        boot steps: a fresh server)."""
        record = self.db.get_migration(MID)
        self.db.update_migration(MID, {
            "state": "running", "step": step, "error": None,
            "finished_at": None,
            "resources": dict(record["resources"], server_id="srv-1",
                              host="cmp-1")})
        self.ctx = flow_context.FlowContext(
            self.db.get_migration(MID), self.db, self.conf, self.clients)
        return self.run()

    def agent_calls(self):
        return [c[0] for c in self.agent.calls if c[0] != "mirror_status"]


# -- the whole flow --------------------------------------------------------


def result_of(world):
    return world.db.get_migration(MID)["result"]


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


class _Engine:
    def submit(self, migration_id):
        return True


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


# -- the clean cutover: CloudStack stops the VM, QEMU's events prove it ------


def _shutdown_time(watch):
    return next(at for at, name, _ in watch.events if name == "SHUTDOWN")


def _messages(done):
    return [e["message"] for e in done["events"]]


# Up to QEMU's exit: the guest shut down, the job still runs.
SHUT_DOWN_JOB_RUNNING = CLEAN_END[:CLEAN_END.index(HOST_SHUTDOWN)]


def assert_rolled_back_after_the_stop(w, done, started):
    """A clean cutover failed once CloudStack's stop was asked for: the
    job ended without pivot, T and the server went, the rollback waited
    for the stop job, and the VM started again only if ``started``."""
    assert (done["state"], done["step"]) == ("failed", "cutover")
    assert not w.watches[0].open
    assert w.dom.calls == ["blockCopy", "blockJobAbort(0)"]
    assert w.log == ["cs stop forced=False", "nova delete",
                     "cs wait stop-job-1"] + (["cs start"] if started
                                               else [])
    assert done["result"]["rolled_back"] == [
        "ended the block copy", "removed the mirror target on cmp-1",
        "deleted server srv-1"] + (["started CloudStack VM web-1 again"]
                                   if started else [])
    res = done["resources"]
    assert (res["source_stopped"], res["source_stop_job"]) == (False, None)


def _stop_failed(text="host busy"):
    return cloudstack_errors.CloudStackJobFailed(
        job_id="stop-job-1", command="stopVirtualMachine", target="web-1",
        errorcode=530, errortext=text)


@pytest.mark.parametrize("stopped, proven_by", [
    # As on a real host: QEMU cancelled the job on its exit, libvirt
    # reaps QEMU later.
    (None, "job ended after the shutdown"),
    # The domain's end came with the events.
    (libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN, "domain shut down"),
])
def test_shutdown_cutover_end_to_end(db, monkeypatch, stopped, proven_by):
    w = World(db, monkeypatch)  # the default method
    w.stopped_detail = stopped
    recorded = []
    finish_mirror = w.agent.finish_mirror

    def finish(*args):
        recorded.append(db.get_migration(MID)["resources"]["source_stop_job"])
        return finish_mirror(*args)

    w.agent.finish_mirror = finish
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    # No suspend, no job end of ours: QEMU's exit ended the job.
    assert w.dom.calls == ["blockCopy"]
    # A clean stop, not forced; stop_source waits for its job, then finds
    # the VM stopped.
    assert w.log == ["cs stop forced=False", "nova start",
                     "cs wait stop-job-1", "cs unmanage"]
    # QEMU's events decided: the job was asked about by stop_source only.
    assert w.cloudstack.polls == ["stop-job-1"]
    assert recorded == ["stop-job-1"]  # the cutover recorded its job
    assert w.agent_calls() == ["prepare_mirror", "finish_mirror",
                               "swap_disk", "cleanup"]
    (watch,) = w.watches
    assert not watch.open  # registered around the stop only
    res, result = done["resources"], done["result"]
    cut = result["cutover"]
    assert cut == {"method": "shutdown", "decided": cut["decided"],
                   "guest_shutdown": True,
                   "shutdown_reason": "guest-shutdown",
                   "proven_by": proven_by}
    assert 0 <= cut["decided"] < 5
    assert (res["cutover_method"], res["cutover_done"], res["committed"],
            res["source_stopped"], res["source_stop_job"]) == (
        "shutdown", True, True, True, None)
    # The downtime runs from the guest's SHUTDOWN, not from the stop
    # request (the guest ran on until then) nor the domain's end.
    powerdown_at = watch.events[0][0]
    shutdown_at = _shutdown_time(watch)
    assert res["cutover_started"] <= powerdown_at < shutdown_at
    if stopped is None:
        assert watch.stopped is None  # decided before the domain ended
    else:
        assert shutdown_at < watch.stopped[0]
    assert res["source_down_at"] == shutdown_at
    assert result["downtime_seconds"] == round(
        res["start_requested_at"] - shutdown_at, 3)
    assert 0 <= result["downtime_seconds"] < 5
    assert result["source_stopped"] is True
    messages = _messages(done)
    assert "CloudStack stops VM web-1 (clean guest shutdown); QEMU's " \
        "events prove the mirror whole (%s) %.2f s after the stop request" \
        % (proven_by, cut["decided"]) in messages, messages
    assert "server srv-1 started on the migrated disk; the source stopped " \
        "serving (shut down) %.2f s before the start was requested" \
        % result["downtime_seconds"] in messages, messages


def test_stop_source_waits_for_the_stop_job_then_deletes(db, monkeypatch):
    w = World(db, monkeypatch, method="shutdown")
    db.update_migration(MID, {"delete_source": True})
    w.ctx.migration["delete_source"] = True
    # CloudStack's job runs on after the proof (libvirt reaps QEMU).
    w.cloudstack.stop_job = ["pending", "pending"]
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["source_deleted"] is True
    # Waited for, not stopped again (it was Running until the job ended).
    assert w.log == ["cs stop forced=False", "nova start",
                     "cs wait stop-job-1", "cs destroy"]
    assert w.cloudstack.polls == ["stop-job-1"] * 3
    assert done["resources"]["source_stop_job"] is None


@pytest.mark.parametrize("leaves, forced", [("Running", True),
                                             ("Stopped", False)])
def test_a_stop_job_failing_after_the_proof_still_commits(
        db, monkeypatch, leaves, forced):
    # QEMU's events proved T at once; CloudStack's job failed afterwards
    # (its agent timed out on the reaped domain, say).  The Nova server
    # runs the proven disk: nothing is rolled back, CloudStack's view is
    # brought in line.
    w = World(db, monkeypatch)
    w.cloudstack.stop_job = ["pending", _stop_failed("agent timed out")]
    w.cloudstack.failed_stop_leaves = leaves
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["cutover"]["proven_by"] == \
        "job ended after the shutdown"
    assert w.log == ["cs stop forced=False", "nova start",
                     "cs wait stop-job-1"] + (["cs stop forced=True"]
                                              if forced else []) + [
                         "cs unmanage"]
    assert w.cloudstack.state == "Stopped"
    assert done["result"]["source_stopped"] is True
    assert done["resources"]["source_stop_job"] is None
    (warning,) = [e for e in done["events"] if e["kind"] == "warning"]
    assert warning["step"] == "stop_source"
    assert "stop job for VM web-1 failed after the cutover" in \
        warning["message"] and "agent timed out" in warning["message"]


def test_the_mirror_step_sees_ready_when_libvirt_reports_it(db, monkeypatch):
    # A poll interval longer than the test may run: only the job's events
    # (libvirt reports each of its steps here) wake the wait early.
    w = World(db, monkeypatch, method="force", mirror_poll_interval=60)
    conn = w.kvm.conn
    registered = []

    def libvirt_reports(dom):
        for callback_id, (watched, callback) in list(conn.callbacks.items()):
            assert watched is dom
            registered.append(callback_id)
            callback(conn, dom, "vda", 2, 3, None)

    w.dom.on_info = libvirt_reports
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["mirror"]["seconds"] < 30
    assert set(registered) == {1}
    assert conn.callbacks == {}  # deregistered with the step


@pytest.mark.parametrize("stopped, proven_by", [
    (libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED, "domain destroyed"),
    (None, "job ended after the shutdown"),
])
def test_shutdown_cutover_of_a_guest_the_host_ended(db, monkeypatch,
                                                    stopped, proven_by):
    # ACPI ignored: CloudStack's stop gave up and destroyed the domain.
    w = World(db, monkeypatch)
    w.source_end = [POWERDOWN, HOST_SHUTDOWN,
                    qmp("JOB_STATUS_CHANGE", id=JOB, status="aborting"),
                    CANCELLED]
    w.stopped_detail = stopped
    w.reap_detail = libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    cut = done["result"]["cutover"]
    assert (cut["guest_shutdown"], cut["shutdown_reason"],
            cut["proven_by"]) == (False, "host-signal", proven_by)
    assert done["resources"]["source_down_at"] == _shutdown_time(
        w.watches[0])
    assert any("(the guest did not shut down: its QEMU was ended by the "
               "host, crash-consistent); QEMU's events prove the mirror "
               "whole (%s)" % proven_by in m for m in _messages(done))


COMPLETED_WITH_ERROR = qmp("BLOCK_JOB_COMPLETED", device=JOB, len=100,
                           offset=50, speed=0, type="mirror",
                           error="Input/output error")


@pytest.mark.parametrize("source_end, stopped, words", [
    # The target's daemon died before a guest write: measured.
    (LOST_WRITE_END, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
     "block job %s reported a write error on its target (report)" % JOB),
    # The job ended while the guest still ran.
    ([POWERDOWN, CANCELLED, GUEST_SHUTDOWN],
     libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN,
     "ended (BLOCK_JOB_CANCELLED) while the guest still ran"),
    # QEMU killed: no SHUTDOWN.
    ([POWERDOWN], libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
     "destroyed without a shutdown from its QEMU"),
    (CLEAN_END, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED,
     "ended abnormally"),
    # Decided before the domain's end.
    (LOST_WRITE_END, None,
     "block job %s reported a write error on its target (report)" % JOB),
    ([POWERDOWN, CANCELLED], None,
     "ended (BLOCK_JOB_CANCELLED) while the guest still ran"),
    (SHUT_DOWN_JOB_RUNNING + [COMPLETED_WITH_ERROR], None,
     "block job %s ended with an error: Input/output error" % JOB),
])
def test_shutdown_cutover_unproven_fails_and_starts_the_vm_again(
        db, monkeypatch, source_end, stopped, words):
    w = World(db, monkeypatch)
    w.source_end, w.stopped_detail = source_end, stopped
    # CloudStack's stop runs on after the refusal: a start meanwhile would
    # be refused (the fake says so).
    w.cloudstack.stop_job = ["pending"] * 3
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "cutover")
    assert words in done["error"]
    # Nothing of T is used: the target goes; the stop job ends; then the
    # VM runs again.
    assert w.agent_calls() == ["prepare_mirror", "abort_mirror"]
    assert w.log == ["cs stop forced=False", "nova delete",
                     "cs wait stop-job-1", "cs start"]
    # Decided by the events: the stop job was asked about by the rollback.
    assert w.cloudstack.polls == ["stop-job-1"] * 4
    assert done["result"]["rolled_back"] == [
        "removed the mirror target on cmp-1", "deleted server srv-1",
        "started CloudStack VM web-1 again"]
    assert w.cloudstack.state == "Running"
    res = done["resources"]
    assert (res["source_stopped"], res["source_stop_job"]) == (False, None)
    assert not res.get("cutover_done")
    assert w.dom.calls == ["blockCopy"]  # never suspended, never pivoted


def test_unreachable_cloudstack_while_deciding_is_waited_through(
        db, monkeypatch):
    w = World(db, monkeypatch)
    # The guest shut down; the job ends with QEMU, QEMU when CloudStack's
    # job has the domain reaped.
    w.source_end = SHUT_DOWN_JOB_RUNNING
    w.cloudstack.stop_job = [
        cloudstack_errors.CloudStackUnreachable(
            endpoint="http://cs:8080/client/api",
            command="queryAsyncJobResult", reason="Connection refused"),
        "pending", "succeeded"]
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["cutover"]["proven_by"] == "domain shut down"
    assert w.watches[0].stopped is not None
    # Once per round until the job succeeded, then stop_source's wait.
    assert w.cloudstack.polls == ["stop-job-1"] * 4
    assert w.log == ["cs stop forced=False", "nova start",
                     "cs wait stop-job-1", "cs unmanage"]


@pytest.mark.parametrize("leaves, started", [("Running", False),
                                             ("Stopped", True)])
def test_a_stop_job_failing_before_the_decision_fails_the_cutover(
        db, monkeypatch, leaves, started):
    w = World(db, monkeypatch)
    w.source_end = [POWERDOWN]  # the guest takes its time
    w.cloudstack.stop_job = ["pending", _stop_failed()]
    w.cloudstack.failed_stop_leaves = leaves
    done = w.run()
    assert "CloudStack job stop-job-1 (stopVirtualMachine web-1) failed " \
        "with error 530: host busy" in done["error"]
    # Two rounds in the cutover, one in the rollback's wait.
    assert w.cloudstack.polls == ["stop-job-1"] * 3
    # The VM started again only if CloudStack does not say it runs.
    assert_rolled_back_after_the_stop(w, done, started)
    assert w.cloudstack.state == "Running"


def test_shutdown_cutover_fails_if_the_domain_never_ends(db, monkeypatch):
    monkeypatch.setattr(cutover_step, "DOMAIN_END_TIMEOUT", 0.05)
    w = World(db, monkeypatch)
    # CloudStack says stopped; libvirt never says anything.
    w.source_end, w.reap_detail = SHUT_DOWN_JOB_RUNNING, None
    w.cloudstack.stop_job = ["pending"]
    w.cloudstack.job_timeout = 60  # the job's success cuts it short
    started = time.monotonic()
    done = w.run()
    assert time.monotonic() - started < 10
    assert "CloudStack stopped VM web-1, but its domain did not end on " \
        "qemu+libssh://root@10.0.0.5/system" in done["error"]
    # Asked until it succeeded, not after; then the rollback's wait.
    assert w.cloudstack.polls == ["stop-job-1"] * 3
    assert_rolled_back_after_the_stop(w, done, started=True)


def test_shutdown_cutover_fails_if_the_stop_job_never_ends(db, monkeypatch):
    w = World(db, monkeypatch)
    w.source_end = [POWERDOWN]  # the guest ignores it
    w.cloudstack.stop_job_end = "pending"
    w.cloudstack.job_timeout = 0.1
    done = w.run()
    assert "CloudStack did not stop VM web-1, but its domain did not end " \
        "on qemu+libssh://root@10.0.0.5/system" in done["error"]
    # The rollback's wait timed out too: CloudStack says it runs.
    assert_rolled_back_after_the_stop(w, done, started=False)


def test_a_stop_cloudstack_refuses_leaves_the_vm_running(db, monkeypatch):
    w = World(db, monkeypatch)

    def stop_refused(vm_id):
        w.log.append("cs stop forced=False")
        raise cloudstack_errors.CloudStackAPIError(
            command="stopVirtualMachine", errorcode=431,
            errortext="host busy")

    w.cloudstack.stop_vm_async = stop_refused
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "cutover")
    assert "host busy" in done["error"]
    assert done["resources"]["source_stopped"] is False
    assert not done["resources"].get("source_stop_job")
    # It never stopped: not started again (CloudStack says Running).
    assert w.log == ["cs stop forced=False", "nova delete"]
    assert w.cloudstack.polls == []
    assert done["result"]["rolled_back"] == [
        "ended the block copy", "removed the mirror target on cmp-1",
        "deleted server srv-1"]
    assert w.dom.state_ == RUNNING


@pytest.mark.parametrize("state, started", [("Running", False),
                                            ("Stopped", True)])
def test_undo_source_starts_the_vm_only_if_cloudstack_says_stopped(
        db, monkeypatch, state, started):
    w = World(db, monkeypatch, step="cutover",
              resources={"source_stopped": True})
    w.cloudstack.state = state
    message = source.undo_source(w.ctx)
    assert (message == "started CloudStack VM web-1 again") is started
    assert w.log == (["cs start"] if started else [])
    assert w.ctx.resources["source_stopped"] is False
    assert w.cloudstack.state == "Running"
    # Nothing left to undo on a second pass.
    assert source.undo_source(w.ctx) is None
    assert w.log.count("cs start") == int(started)


@pytest.mark.parametrize("script, started", [
    (["pending", "pending", "succeeded"], True),
    (["pending", _stop_failed()], False),
])
def test_undo_source_waits_for_the_stop_job_first(db, monkeypatch, script,
                                                  started):
    w = World(db, monkeypatch, step="cutover", resources={
        "source_stopped": True, "source_stop_job": "stop-job-1"})
    w.cloudstack.add_stop_job(script)
    message = source.undo_source(w.ctx)
    assert (message == "started CloudStack VM web-1 again") is started
    assert w.cloudstack.polls == ["stop-job-1"] * len(script)
    assert w.log == ["cs wait stop-job-1"] + (["cs start"] if started
                                              else [])
    res = w.ctx.resources
    assert (res["source_stopped"], res["source_stop_job"]) == (False, None)
    assert w.cloudstack.state == "Running"


@pytest.mark.parametrize("created, asked, expected", [
    (None, "force", "force"),
    ("shutdown", "force", "force"),
    ("force", "shutdown", "shutdown"),
    ("force", None, "force"),
])
def test_the_cutover_action_may_choose_the_method(db, monkeypatch, created,
                                                  asked, expected):
    w = World(db, monkeypatch, cutover="manual", method=created)
    w.operator_cuts_over(after_looks=30, method=asked)
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["cutover"]["method"] == expected
    assert done["resources"]["cutover_method"] == expected
    if expected == "force":
        assert w.dom.calls == ["blockCopy", "suspend", "blockJobAbort(0)"]
        assert w.log == ["nova start", "cs stop forced=True", "cs unmanage"]
        assert w.watches == []
    else:
        assert w.dom.calls == ["blockCopy"]
        assert w.log == ["cs stop forced=False", "nova start",
                         "cs wait stop-job-1", "cs unmanage"]
        assert len(w.watches) == 1
    messages = [e["message"] for e in done["events"]]
    assert "cutover%s requested by ops" % (
        " (%s)" % asked if asked else "") in messages


def test_cutover_method_reads_the_action_then_the_request(db, monkeypatch):
    w = World(db, monkeypatch)
    assert cutover_step.cutover_method(w.ctx) == "shutdown"

    def options(**values):
        db.update_migration(MID, {"options": dict(
            {"networks": {}, "cutover": "auto"}, **values)})
        return cutover_step.cutover_method(w.ctx)

    assert options(cutover_method="force") == "force"
    assert options(cutover_method="force",
                   cutover_requested={"by": "ops"}) == "force"
    assert options(cutover_method="force", cutover_requested={
        "by": "ops", "method": "shutdown"}) == "shutdown"
    assert options(cutover_requested={"by": "ops",
                                      "method": "force"}) == "force"


@pytest.mark.parametrize("reached_cloudstack", [True, False])
def test_conductor_restart_mid_shutdown_cutover_fails_safe(
        db, monkeypatch, reached_cloudstack):
    resources = {
        "mirror_prepared": True, "mirror_started": True,
        "mirror_ready": True, "cutover_started": 1000.0,
        "cutover_method": "shutdown", "source_stopped": True}
    if reached_cloudstack:
        resources["source_stop_job"] = "stop-job-1"
    w = World(db, monkeypatch, step="cutover", resources=resources)
    if reached_cloudstack:
        # The VM stopped while no conductor watched: its domain is gone.
        w.cloudstack.add_stop_job(["pending"])
        w.kvm.dom = None
    else:
        # The stop never got to CloudStack: the mirror runs on.
        w.dom.job, w.dom.ready, w.dom.export = {"cur": 100, "end": 100}, \
            True, EXPORT
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "cutover")
    assert "the conductor stopped during a clean cutover" in done["error"]
    assert w.watches == []
    assert "cs stop forced=False" not in w.log
    undone = ["removed the mirror target on cmp-1", "deleted server srv-1"]
    if reached_cloudstack:
        assert done["result"]["rolled_back"] == undone + [
            "started CloudStack VM web-1 again"]
        assert w.log == ["nova delete", "cs wait stop-job-1", "cs start"]
    else:
        assert done["result"]["rolled_back"] == [
            "ended the block copy"] + undone
        assert w.log == ["nova delete"]
        assert w.dom.calls == ["blockJobAbort(0)"]
    assert w.cloudstack.state == "Running"
    assert not done["resources"].get("source_stop_job")


def test_a_retry_after_a_failure_past_the_cutover_cuts_over_afresh(
        db, monkeypatch):
    w = World(db, monkeypatch)
    w.agent.finish_error = mirror_errors.StorageDaemonDied(
        pid=11, status="killed by SIGKILL", during="closing", stderr="")
    failed = w.run()
    assert (failed["state"], failed["step"]) == ("failed", "finish")
    assert failed["result"]["rolled_back"] == [
        "removed the mirror target on cmp-1", "deleted server srv-1",
        "started CloudStack VM web-1 again"]
    assert failed["resources"]["cutover_done"] is True
    # The retry's mirror is a new one: its cutover is too.
    w.agent.finish_error = None
    done = w.rerun("mirror")
    assert done["state"] == "succeeded", done["error"]
    assert w.dom.calls == ["blockCopy", "blockCopy"]
    assert len(w.watches) == 2
    assert w.log == ["cs stop forced=False", "nova delete",
                     "cs wait stop-job-1", "cs start",
                     "cs stop forced=False", "nova start",
                     "cs wait stop-job-2", "cs unmanage"]
    assert done["resources"]["source_down_at"] == _shutdown_time(
        w.watches[1])
    assert done["resources"]["cutover_started"] > _shutdown_time(
        w.watches[0])
    assert w.agent_calls().count("finish_mirror") == 2


def test_the_mirror_step_forgets_an_earlier_attempts_cutover(db,
                                                             monkeypatch):
    w = World(db, monkeypatch, method="force", resources={
        "cutover_started": 1000.0, "cutover_method": "shutdown",
        "cutover_done": True,
        "source_down_at": 1000.0, "source_stop_job": "stop-job-1"})
    mirroring.mirror(w.ctx)
    res = w.ctx.resources
    assert (res["cutover_started"], res["cutover_method"],
            res["cutover_done"],
            res["source_down_at"], res["source_stop_job"]) == (
        None, None, False, None, None)


# A conductor died after it froze the source for a forced cutover.
FROZEN_MID_CUTOVER = {
    "mirror_prepared": True, "mirror_started": True, "mirror_ready": True,
    "cutover_started": 1000.0, "cutover_method": "force",
    "source_suspended": True}


def test_conductor_restart_mid_cutover_finishes_a_frozen_ready_job(
        db, monkeypatch):
    w = World(db, monkeypatch, method="force", step="cutover",
              resources=FROZEN_MID_CUTOVER)
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
    w = World(db, monkeypatch, method="force", step="cutover",
              resources=FROZEN_MID_CUTOVER)
    w.dom.state_ = PAUSED
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "cutover")
    assert "cannot be proven complete" in done["error"]
    assert w.dom.calls == ["resume"]
    assert done["result"]["rolled_back"][0] == "resumed CloudStack VM web-1"


def test_conductor_restart_during_the_hold_adopts_a_whole_mirror(
        db, monkeypatch):
    w = World(db, monkeypatch, method="force", step="ready", resources={
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
    w = World(db, monkeypatch, method="force", step="ready", resources={
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
    monkeypatch.setattr(mirroring, "BUSY_POLL", 0)
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

    monkeypatch.setattr(prepare, "validate", cold_validate)
    w.dom.state_ = dom_state
    if foreign_job:
        w.dom.job, w.dom.export = {"cur": 1, "end": 9}, "someone-else"
    mirroring.validate(w.ctx)
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

    def set_image_properties(self, image_id, props):
        self.updates.append(props)


def _image_world(db, monkeypatch, properties):
    w = World(db, monkeypatch, step="image", resources={
        "template_path": "/mnt/pool-1/tmpl-1", "base_proof": None})
    w.ctx.migration["source"] = {"root_volume": {"storage": {"id": "p"}}}
    glance = Glance(properties)
    w.nova.get_image = glance.get_image
    w.nova.set_image_properties = glance.set_image_properties
    monkeypatch.setattr(image_step, "image", lambda ctx: None)
    return w, glance


def test_image_reuses_the_recorded_guest_digest(db, monkeypatch):
    w, glance = _image_world(db, monkeypatch, {
        image_step.GUEST_DIGEST_KEY: "cd" * 32,
        image_step.GUEST_SIZE_KEY: "4096"})
    monkeypatch.setattr(image_step.transfer, "get_source", None)  # never read
    image_step.image_with_guest_digest(w.ctx)
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

    monkeypatch.setattr(image_step.transfer, "get_source", get_source)
    monkeypatch.setattr(image_step.sources, "source_for",
                        lambda conf, vm, path: {"path": path})
    monkeypatch.setattr(image_step, "spool", spool)
    monkeypatch.setattr(guestview, "guest_digest", lambda path, fmt, d: {
        "algorithm": "guest_sha256", "digest": "ef" * 32,
        "virtual_size": 8192, "method": "map"})
    image_step.image_with_guest_digest(w.ctx)
    assert read == [{"path": "/mnt/pool-1/tmpl-1"}]
    assert glance.updates == [{image_step.GUEST_DIGEST_KEY: "ef" * 32,
                               image_step.GUEST_SIZE_KEY: "8192"}]
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
