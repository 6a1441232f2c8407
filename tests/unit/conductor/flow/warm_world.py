"""One warm migration and everything it talks to, faked: the warm World.

A real SQLite record (``db``), the fake libvirt (tests/fakes/libvirt.py),
and fakes of the agent, Nova, CloudStack and Neutron that log the calls
that matter; CloudStack's clean stop feeds QEMU's scripted events
(scripted_sourceend.py) to the real SourceEndWatch.  Plain names,
imported by the warm flow's tests (test_warm*.py) and the single steps'
(test_mirroring.py, test_cutover.py, test_source.py, test_image.py).
"""

import json
import time
import types

import libvirt

from cs2os_agent.cloudstack import client as cs_client
from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import nbd
from cs2os_agent.conductor import manager
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import cutover as cutover_step
from cs2os_agent.conductor.flow import mirroring
from cs2os_agent.conductor.flow import runner
from tests.fakes import libvirt as fakes
from tests.unit.conductor.flow.scripted_sourceend import CLEAN_END
from tests.unit.conductor.flow.scripted_sourceend import ScriptedSourceEnd

MID = "11111111-2222-3333-4444-555555555555"
EXPORT = nbd.export_name(MID)
RUNNING = libvirt.VIR_DOMAIN_RUNNING
PAUSED = libvirt.VIR_DOMAIN_PAUSED
SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF


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
            kvm_libvirt_uri="qemu+ssh://root@{host}/system?keyfile=/id"),
        conductor=types.SimpleNamespace(**values))


READY_TO_MIRROR = {
    "host": "cmp-1", "server_id": "srv-1", "image_id": "img-1",
    "kvm_host": "10.0.0.5", "source_domain": "i-2-7-VM",
    "source_disk": "vda", "socket_owner": "64055:64055",
    "overlay_virtual_size": 1 << 30,
    "base_proof": {"algorithm": "guest_sha256", "digest": "ab" * 32,
                   "virtual_size": 1 << 30},
}


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
        self.dom = fakes.FakeDomain()
        self.conn = fakes.install(monkeypatch,
                                  fakes.FakeConnection(self.dom))
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
        # One Nova and Neutron for every project, as the real Clients
        # gives a migration without a target project.
        self.clients.in_project = lambda project_id: (
            self.clients.openstack, self.clients.network)
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
            watch._on_qmp(self.conn, dom, name, 0, 0, json.dumps(data),
                          None)
        if self.stopped_detail is not None:
            time.sleep(0.01)  # libvirt reaps QEMU
            self._domain_ends(self.stopped_detail)

    def _domain_ends(self, detail):
        # QEMU's exit ended the job; CloudStack's domains are transient.
        dom = self.dom
        dom.job, dom.ready, dom.state_ = None, False, SHUTOFF
        dom.gone = True
        for watch in self.watches:
            if watch.open:
                watch._on_lifecycle(self.conn, dom,
                                    libvirt.VIR_DOMAIN_EVENT_STOPPED,
                                    detail, None)

    def _source_reaped(self):
        if not self.dom.gone and self.reap_detail is not None:
            self._domain_ends(self.reap_detail)

    def _source_starts(self):
        self.dom.state_ = RUNNING
        self.dom.gone = False

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


def stop_failed(text="host busy"):
    return cloudstack_errors.CloudStackJobFailed(
        job_id="stop-job-1", command="stopVirtualMachine", target="web-1",
        errorcode=530, errortext=text)
