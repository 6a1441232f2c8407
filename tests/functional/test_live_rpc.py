"""The agent's live-mode RPC API 1.6 over real RabbitMQ and two libvirtds.

An agent process (tools/testbed/agent_process) whose "Nova host" libvirtd
is this machine's; the "CloudStack KVM host" is a second libvirtd
(tools/testbed/libvirtd_ns), which the agent opens with ``[live]
kvm_libvirt_uri`` (its unix socket).  A runs the counter guest
(tools/testbed/live_guest) there, on a qcow2 overlay of the template with
a pattern written in its top layer; B is a Nova-like instance (D = the
template as raw in ``_base``, Nova's ``disk`` on D, first-boot junk
written to it), defined and shut off.  This test plays the conductor:

- prepare_live_target + swap_disk: T (fresh, on D) becomes Nova's disk;
- live_hop: A runs here as ``cs2os-live-<id>`` with A's UUID, gone from
  the KVM host, its counter going on with no boot banner;
- begin_live_move: B paused, waiting; finish_live_move: B runs the
  guest, the counter goes on, no banner; B's disk shows exactly A's
  (``qemu-img compare``: the counter guest never writes its disk, so A's
  disk, unused since the hop, is what B's must show: the pattern from
  A's top layer, the template from D, none of Nova's junk);
- begin then abort: the temporary domain runs on, B shut off; then
  live_hop_back: A runs on the KVM host again under its name and UUID,
  the counter continuous; restore_disk puts Nova's disk back.

Every call is repeated once: the same outcome.  Heavy (KVM guests, an
agent): run under the lock,
``flock /tmp/cs2os-heavy.lock .tox/ci/bin/python -m pytest ...``.
"""

import os
import re
import subprocess
import time
import uuid

import libvirt
import pytest

from cs2os_agent import virt
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import exception
from tools.testbed import agent_process
from tools.testbed import harness
from tools.testbed import images
from tools.testbed import live_guest
from tools.testbed import live_kvm

LOCAL = "127.0.0.1"
SIZE = 16 * live_guest.MiB


@pytest.fixture(scope="module")
def kvm_host(workdir):
    """The second libvirtd (CloudStack's KVM host), and a connection;
    its socket reached through a ``{host}`` URI (live_kvm.uri_template),
    as the agent's [live] kvm_libvirt_uri must name the host."""
    daemon = live_kvm.start_kvm_host(harness.RUN_ID + "-rpc",
                                     os.path.join(workdir, "live-rpc-cs"))
    yield daemon
    live_kvm.stop_kvm_host(daemon)


@pytest.fixture(scope="module")
def live_agent(workdir, services, agent_api, instances_path, kvm_host):
    agent = agent_process.AgentProcess(
        workdir, host="cs2os-test-%s-live" % harness.RUN_ID,
        transport_url=harness.TRANSPORT_URL, exchange=services["exchange"],
        instances_path=instances_path, allowed_source_roots=[])
    with open(agent.conf_file, "a") as f:
        f.write("\n[libvirt]\nconnection_uri = %s\n" % harness.LIBVIRT_URI)
        f.write("\n[mirror]\nrun_dir = %s\n"
                % os.path.join(workdir, "agent-mirror"))
        f.write("\n[live]\nkvm_libvirt_uri = %s\nmigrate_address = %s\n"
                "run_dir = %s\n" % (live_kvm.uri_template(kvm_host), LOCAL,
                                    os.path.join(workdir, "lr")))
    agent.info = agent.start(agent_api, cs2os_context.get_admin_context())
    yield agent
    agent.stop()


def _run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


class Case:
    """A on the KVM host, B (Nova's instance) here, the consoles watched."""

    def __init__(self, conn, kvm, workdir, instances_path):
        self.conn, self.kvm = conn, kvm
        self.migration = "%s-%s" % (harness.RUN_ID, uuid.uuid4().hex)
        self.temp = "cs2os-live-%s" % harness.RUN_ID
        self.d = os.path.join(workdir, "live-" + uuid.uuid4().hex[:6])
        os.makedirs(self.d, mode=0o755)
        self.template = live_guest.make_disk(self.file("template.qcow2"))
        self.inst = images.make_nova_instance(
            instances_path, self.template, SIZE,
            "cs2os-ft-live-%s" % harness.RUN_ID)
        # Nova's first boot wrote to its disk: T must not show it.
        _run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 1M",
             self.inst.disk)
        self.b_console = os.path.join(self.inst.instance_dir, "console.log")
        self.b = conn.defineXML(live_guest.domain_b_xml(
            self.inst.domain_name, self.inst.uuid, self.inst.disk,
            self.b_console))
        # A: CloudStack's overlay on the template, data in its top layer.
        self.a_disk = self.file("a.qcow2")
        _run("qemu-img", "create", "-q", "-f", "qcow2", "-b", self.template,
             "-F", "qcow2", self.a_disk, str(SIZE))
        _run("qemu-io", "-f", "qcow2", "-c", "write -P 0x77 4M 64k",
             self.a_disk)
        os.chmod(self.a_disk, 0o644)
        self.a_console = self.file("a.log")
        self.temp_console = os.path.join(self.inst.instance_dir,
                                         "console.cs2os-live-0.log")
        self.watch = live_guest.SerialWatch(self.a_console,
                                            self.temp_console,
                                            self.b_console)
        self.watch.start()
        self.a_name = "cs2os-ft-live-%s-a" % harness.RUN_ID
        self.a_uuid = str(uuid.uuid4())
        self.a = kvm.conn.createXML(live_guest.domain_a_xml(
            self.a_name, self.a_uuid, self.a_disk, self.a_console), 0)
        self.watch.wait_counter(self.a_console, 10)
        self.source = {"host": LOCAL, "domain": self.a_name}

    def file(self, name):
        return os.path.join(self.d, name)

    def goes_on(self, console, timeout=10):
        last = self.watch.counters(console)
        self.watch.wait_counter(console, (last[-1][1] if last else 0) + 30,
                                timeout)

    def consecutive(self, *consoles):
        values = self.watch.joined_counters(*consoles)
        assert values == list(range(values[0], values[0] + len(values)))
        return values

    def same_disk(self, dom, a_disk, other):
        """``qemu-img compare`` with ``dom`` paused (its writes flushed
        by the pause are not needed: the guest never writes its disk)."""
        dom.suspend()
        try:
            done = subprocess.run(
                ["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2",
                 a_disk, other], capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            _run("qemu-io", "-U", "-r", "-f", "qcow2", "-c",
                 "read -P 0x77 4M 64k", "-c", "read -P 0 1M 1M", other)
        finally:
            dom.resume()

    def close(self):
        self.watch.stop()
        for conn in (self.conn, self.kvm.conn):
            for dom in conn.listAllDomains(0):
                if dom.UUIDString() in (self.a_uuid, self.inst.uuid):
                    live_guest.remove_domain(dom)


@pytest.fixture
def case(conn, kvm_host, workdir, instances_path):
    made = []

    def make():
        made.append(Case(conn, kvm_host, workdir, instances_path))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _prepare_and_hop(c, api, ctxt, host):
    proof = {"template": c.template, "template_format": "qcow2"}
    staged = api.prepare_live_target(ctxt, host, c.migration, c.inst.uuid,
                                     proof)
    assert staged["staged"] == os.path.join(c.inst.instance_dir,
                                            "disk.cs2os-staged")
    assert staged["base_proof"]["method"] == "compare"
    assert staged["backing_file"] == c.inst.base
    assert staged["virtual_size"] == SIZE and staged["reused"] is False
    assert api.prepare_live_target(ctxt, host, c.migration, c.inst.uuid,
                                   proof)["reused"] is True
    assert api.swap_disk(ctxt, host, c.migration,
                         c.inst.uuid)["swapped"] is True
    assert api.prepare_live_target(ctxt, host, c.migration, c.inst.uuid,
                                   proof)["reused"] is True
    hopped = api.live_hop(ctxt, host, c.migration, c.inst.uuid, c.source)
    assert hopped["temp_domain"] == c.temp and hopped["reused"] is False
    assert hopped["consoles"] == {c.a_console: c.temp_console}
    temp = c.conn.lookupByName(c.temp)
    assert temp.UUIDString() == c.a_uuid and virt.state(temp) == virt.RUNNING
    assert c.a_uuid not in [d.UUIDString()
                            for d in c.kvm.conn.listAllDomains(0)]
    assert virt.domain_xml(temp).find("devices/disk/source").get(
        "file") == c.inst.disk
    c.goes_on(c.temp_console)
    assert c.watch.banners(c.temp_console) == 0
    c.consecutive(c.a_console, c.temp_console)
    again = api.live_hop(ctxt, host, c.migration, c.inst.uuid, c.source)
    assert again["reused"] is True and again["temp_domain"] == c.temp
    print("\nhop over RPC: QEMU downtime %s ms, %.2f s, %s RAM bytes"
          % (hopped["downtime_ms"], hopped["seconds"],
             hopped["memory_bytes"]))
    return temp


def test_live_rpc_hop_then_move_into_novas_domain(live_agent, agent_api,
                                                   ctxt, case):
    c, host = case(), live_agent.host
    assert live_agent.info["rpc_api_version"] == "1.6"
    _prepare_and_hop(c, agent_api, ctxt, host)
    begun = agent_api.begin_live_move(ctxt, host, c.migration, c.inst.uuid,
                                      30)
    assert begun["target_waiting"] is True
    # The conductor's moment: B paused, waiting; the guest still runs in
    # the temporary domain.
    assert virt.state(c.b) == virt.PAUSED
    c.goes_on(c.temp_console)
    assert agent_api.begin_live_move(ctxt, host, c.migration, c.inst.uuid,
                                     30)["reused"] is True
    done = agent_api.finish_live_move(ctxt, host, c.migration)
    assert done["state"] == "running" and done["reused"] is False
    assert virt.state(c.b) == virt.RUNNING
    with pytest.raises(libvirt.libvirtError):
        c.conn.lookupByName(c.temp)
    c.goes_on(c.b_console)
    assert c.watch.banners(c.b_console) == 0
    values = c.consecutive(c.a_console, c.temp_console, c.b_console)
    again = agent_api.finish_live_move(ctxt, host, c.migration)
    assert again["reused"] is True and again["state"] == "running"
    # The hop's record still answers; nothing to hop back now.
    assert agent_api.live_hop(ctxt, host, c.migration, c.inst.uuid,
                              c.source)["reused"] is True
    with pytest.raises(exception.LiveRefused, match="runs in Nova's"):
        agent_api.live_hop_back(ctxt, host, c.migration, c.inst.uuid,
                                c.source)
    c.same_disk(c.b, c.a_disk, c.inst.disk)
    print("move over RPC: QEMU downtime %s ms, switch %.3f s, %d stream "
          "bytes; counter %d..%d over A, temp, B" % (
              done["downtime_ms"], done["switch_seconds"],
              done["stream_bytes"], values[0], values[-1]))


def _counters_after(path, last, timeout=10):
    """Counters in ``path``'s text after the value ``last`` (30 of them
    at least), and the boot banners in it.  Read whole: libvirt may have
    reopened the file truncated, which the watch's offsets cannot follow.
    """
    deadline = time.monotonic() + timeout
    while True:
        with open(path, errors="replace") as f:
            text = f.read()
        values = [int(v, 16) for v in re.findall(r"C=([0-9A-F]{8})\r?\n",
                                                 text)]
        after = [v for v in values if v > last]
        if len(after) >= 30 or time.monotonic() > deadline:
            return after, text.count(live_guest.BANNER)
        time.sleep(0.1)


def test_live_rpc_abort_then_hop_back(live_agent, agent_api, ctxt, case):
    c, host = case(), live_agent.host
    with pytest.raises(exception.LiveRefused,
                       match="call prepare_live_target and swap_disk"):
        agent_api.live_hop(ctxt, host, c.migration, c.inst.uuid, c.source)
    assert agent_api.live_hop_back(ctxt, host, c.migration, c.inst.uuid,
                                   c.source)["hopped_back"] is False
    temp = _prepare_and_hop(c, agent_api, ctxt, host)
    assert agent_api.begin_live_move(ctxt, host, c.migration, c.inst.uuid,
                                     30)["target_waiting"] is True
    assert virt.state(c.b) == virt.PAUSED
    assert agent_api.abort_live_move(ctxt, host,
                                     c.migration)["aborted"] is True
    assert virt.state(c.b) == virt.SHUT_OFF
    assert virt.state(temp) == virt.RUNNING
    c.goes_on(c.temp_console)
    assert agent_api.abort_live_move(ctxt, host, c.migration)["aborted"]
    with pytest.raises(exception.LiveFailed, match="aborted"):
        agent_api.finish_live_move(ctxt, host, c.migration)
    assert c.watch.counters(c.b_console) == []

    back = agent_api.live_hop_back(ctxt, host, c.migration, c.inst.uuid,
                                   c.source)
    time.sleep(0.2)  # the watch reads the ended domain's console to its end
    last = c.consecutive(c.temp_console)[-1]
    assert back["hopped_back"] is True and back["domain"] == c.a_name
    a = c.kvm.conn.lookupByName(c.a_name)
    assert a.UUIDString() == c.a_uuid and virt.state(a) == virt.RUNNING
    with pytest.raises(libvirt.libvirtError):
        c.conn.lookupByName(c.temp)
    # A's console file again (the hop back maps it home): counters go on
    # from the temporary domain's last, no second boot banner.
    after, banners = _counters_after(c.a_console, last)
    assert banners <= 1 and after[0] in (last + 1, last + 2)
    assert after == list(range(after[0], after[0] + len(after)))
    assert agent_api.live_hop_back(ctxt, host, c.migration, c.inst.uuid,
                                   c.source)["reused"] is True
    c.same_disk(a, c.inst.disk, c.a_disk)
    assert agent_api.restore_disk(ctxt, host, c.migration,
                                  c.inst.uuid)["restored"] is True
    print("\nhop back over RPC: QEMU downtime %s ms, %.2f s"
          % (back["downtime_ms"], back["seconds"]))
