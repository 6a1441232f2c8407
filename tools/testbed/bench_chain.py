"""The benchmarks' migration chain and warm mode's figures.

Shared by tools/bench_mirror.py and tools/bench_live.py: the CloudStack
API stand-in (its VMs running transient KVM domains), the KVM host's
private sshd (the warm mirror's tunnel), cs2os-agent and cs2os-conductor
as their own processes on a RabbitMQ vhost of their own, and the
minicloud's real Keystone, Glance, Placement and Nova.

With ``live_host`` the stand-in's KVM host is a second libvirtd
(tools/testbed/live_kvm, as tests/e2e/live_fixtures): the agent gets a
[live] section and the conductor reaches the KVM host there, so one
chain migrates in live mode (a real cross-host hop) and in warm mode (the
mirror's tunnel through the sshd on 127.0.0.1, whose /tmp the second
libvirtd's QEMU shares).

:func:`warm_figures` is warm mode's cutover, finish and tool-added
downtime from a migration's result, as bench_mirror prints them.
"""

import json
import os
import subprocess
import sys
import urllib.parse
import uuid

from cs2os_agent.agent import rpcapi as agent_rpcapi
from cs2os_agent.common import context
from cs2os_agent.common import rpc
from cs2os_agent.common import states
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from tools.testbed import cloudstack_api
from tools.testbed import cloudstack_kvm
from tools.testbed import harness
from tools.testbed import live_kvm
from tools.testbed import minicloud
from tools.testbed import service
from tools.testbed import warm_chain

FINAL = states.FINAL


def warm_figures(result):
    """A warm migration's figures from its result: ``cutover_ms``
    (shutdown: CloudStack's stop request -> QEMU's events prove T; force:
    suspend + end the job), ``finish_s`` (the agent closing, checking and
    staging T) and ``downtime_s``, the tool-added downtime: the source
    stopped serving (its QEMU's SHUTDOWN event, or frozen) -> Nova asked
    to start the server, as the conductor records them."""
    return {
        "cutover_ms": result["cutover"].get(
            "total", result["cutover"].get("decided")) * 1000,
        "finish_s": result["sync"]["seconds"],
        "downtime_s": result["downtime_seconds"],
    }


class Chain:
    """Everything a migration talks to, started and stopped here.

    ``offering_memory``: the stand-in's service offering (MiB); live mode
    needs the flavor's (m1.tiny: 64).  Every name carries ``run_id``.
    """

    def __init__(self, work, run_id, broker_url, offering_memory=128,
                 offering_name="small", live_host=False):
        self.work = work
        self.run_id = run_id
        self.broker_url = broker_url
        self.offering_memory = offering_memory
        self.offering_name = offering_name
        self.live_host = live_host
        self.kvm_host = None
        self.started = []

    def start(self):
        with open(os.path.join(minicloud.STATE_DIR, "minicloud.json")) as f:
            self.minicloud_info = json.load(f)
        self.minicloud = minicloud.Minicloud(
            info=self.minicloud_info,
            conn=minicloud.smoke.connect(self.minicloud_info))
        # A vhost of our own: queue names are global within one.
        broker = self.broker_url.rstrip("/")
        self.vhost = "cs2os-bench-%s" % self.run_id
        user = urllib.parse.urlsplit(broker).username or "guest"
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", self.vhost],
                       check=True, capture_output=True)
        self.started.append(lambda: subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", self.vhost],
            check=False, capture_output=True))
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p",
                        self.vhost, user, ".*", ".*", ".*"], check=True,
                       capture_output=True)
        url = broker + "/" + self.vhost
        exchange = "cs2os-bench-%s" % self.run_id
        # Short: a call sent before a server's queue exists is lost, and
        # the start-up probes retry (as the tests' harness does).
        service.init_rpc_client(self.work, url, exchange,
                                harness.RPC_RESPONSE_TIMEOUT)
        self.started.append(rpc.cleanup)
        self.ctxt = context.get_admin_context()
        self.cs_root = os.path.join(self.work, "cloudstack")
        os.makedirs(self.cs_root, mode=0o755)
        if self.live_host:
            self.kvm_host = live_kvm.start_kvm_host(
                "bench-%s-kvm" % self.run_id, self.cs_root)
            self.started.append(lambda: live_kvm.stop_kvm_host(
                self.kvm_host))
            kvm = live_kvm.kvm_on(self.kvm_host, self.cs_root,
                                  stop_grace=1.0)
        else:
            kvm = cloudstack_kvm.LibvirtKVM(self.cs_root,
                                            harness.LIBVIRT_URI,
                                            stop_grace=1.0)
        self.started.append(kvm.cleanup)
        self.cloud = cloudstack_api.FakeCloudStack(kvm)
        self.cloud.admin = self.cloud.add_account("admin")
        self.cloud.kvm_host = self.cloud.add_host(
            self.cloud.add_zone("zone-%s" % self.run_id),
            "kvm-%s" % self.run_id, "127.0.0.1")
        self.cloud.offering = self.cloud.add_service_offering(
            "%s-%s" % (self.offering_name, self.run_id), cpunumber=1,
            memory=self.offering_memory)
        self.cloud.endpoint = self.cloud.serve()
        self.started.append(self.cloud.shutdown)
        self.sshd = warm_chain.start_kvm_sshd(self.work)
        self.started.append(self.sshd.stop)
        remote_dir = warm_chain.make_remote_dir(self.run_id)
        self.started.append(lambda: warm_chain.remove_dir(remote_dir))
        self.agent = warm_chain.make_agent(
            self.work, self.minicloud.compute_host, url, exchange,
            self.minicloud.instances_path, self.cs_root, self.sshd,
            remote_dir, os.path.join(self.work, "mirror"))
        if self.live_host:
            # As tests/e2e/live_fixtures' agent: the KVM host's libvirtd
            # by the {host} template, migration data on 127.0.0.1.
            with open(self.agent.conf_file, "a") as f:
                f.write("\n[live]\nkvm_libvirt_uri = %s\n"
                        "migrate_address = %s\n"
                        % (live_kvm.uri_template(self.kvm_host),
                           live_kvm.LOCAL))
        self.agent.start(agent_rpcapi.AgentAPI(), self.ctxt)
        self.started.append(self.agent.stop)
        self.api = conductor_rpcapi.ConductorAPI()
        self.conductor = warm_chain.make_conductor(
            self.work, "bench-%s" % self.run_id, url, exchange, self.cloud,
            minicloud.admin_auth(self.minicloud), self.cs_root, self.sshd,
            mirror_poll_interval=0.1)
        if self.live_host:
            # validate and the mirror reach the source on the second
            # libvirtd (the sshd's qemu+ssh would reach the main one):
            # the later value of a repeated option wins.
            with open(self.conductor.conf_file, "a") as f:
                f.write("\n[cloudstack]\nkvm_libvirt_uri = %s\n"
                        % live_kvm.uri_template(self.kvm_host))
        self.conductor.manage("db", "sync")
        self.conductor.start()
        self.started.append(self.conductor.stop)
        # Last undone first: before the conductor goes, nothing of ours
        # may stay in Nova or Glance (also after a failed run).
        self.images = set()
        self.started.append(self.delete_own)

    def stop(self):
        for undo in reversed(self.started):
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - stop the rest too
                print("cleanup: %s" % exc, file=sys.stderr)
        if getattr(self, "minicloud", None) is not None:
            self.minicloud.conn.close()

    def vm_name(self):
        return "bench-%s-%s" % (self.run_id, uuid.uuid4().hex[:6])

    def boot_vm(self, volume):
        vm = self.cloud.add_kvm_vm(
            self.vm_name(), volume, self.cloud.admin, self.cloud.kvm_host,
            offering=self.cloud.offering)
        harness.wait_console(self.cloud.kvm.console(vm.instancename),
                             volume.message)
        return vm

    def start_migration(self, vm, **request):
        """The conductor's record of a new migration of ``vm`` into the
        minicloud's compute host (``request``: mode, cutover_method...)."""
        request.update(source=vm.name, host=self.minicloud.compute_host)
        return self.api.create_migration(self.ctxt, request)

    def wait_done(self, migration_id, timeout=1800):
        """The record once final; a migration that did not succeed
        raises, naming its last events."""
        done = harness.wait_state(self.api, self.ctxt, migration_id, FINAL,
                                  timeout=timeout)
        image_id = (done.get("resources") or {}).get("image_id")
        if image_id:
            self.images.add(image_id)
        if done["state"] != "succeeded":
            raise RuntimeError("migration %s %s: %s; %s" % (
                done["id"], done["state"], done["error"],
                [(e["step"], e["message"]) for e in done["events"]][-6:]))
        return done

    def migrate(self, vm, **request):
        return self.wait_done(self.start_migration(vm, **request)["id"])

    def delete_server(self, server_id):
        conn = self.minicloud.conn
        server = conn.compute.get_server(server_id)
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, wait=300)

    def delete_own(self):
        """The servers our migrations made (named after our VMs) and the
        Glance images they uploaded."""
        conn = self.minicloud.conn
        ours = [s for s in conn.compute.servers(all_projects=True)
                if s.name.startswith("bench-%s-" % self.run_id)]
        for server in ours:
            conn.compute.delete_server(server)
        for server in ours:
            conn.compute.wait_for_delete(server, wait=300)
        for image_id in sorted(self.images):
            conn.image.delete_image(image_id, ignore_missing=True)
