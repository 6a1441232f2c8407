#!/usr/bin/env python3
"""Migrate one CloudStack KVM VM into a Nova instance on this machine.

What runs for real: a "CloudStack host" (a transient KVM domain on a qcow2
overlay whose header names /mnt/<pool uuid>/<template uuid>, exactly as on
CloudStack NFS primary storage), a "Nova compute node" (raw base in _base,
qcow2 root disk on it, a persistent KVM domain defined the way Nova defines
it), RabbitMQ, and cs2os-agent as its own process driven over RPC.  The
guests are a 512-byte boot sector that prints the disk's sector 1 to the
serial console, so each guest says which disk it booted from.

The controller-side steps a conductor will own (Glance upload, Nova boot
and stop, CloudStack stop) are done here directly on the files and domains.
Run it as root from the repository root with libvirtd and RabbitMQ up
(tools/demo.sh does all of that).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid

import libvirt

from cs2os_agent import qemu_img
from cs2os_agent.agent import domain  # noqa: F401 - quiets libvirt's stderr
from cs2os_agent.agent import rpcapi
from cs2os_agent.common import context
from cs2os_agent.common import rpc
from tests.functional import agent_process
from tests.functional import images

MiB = images.MiB
CLOUDSTACK_XML = """<domain type='kvm'>
  <name>%(name)s</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%(overlay)s'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='%(template)s'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='%(console)s'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


class Steps:
    def __init__(self):
        self.times = []

    def run(self, title, fn, *args):
        print("==> %s" % title, flush=True)
        started = time.monotonic()
        result = fn(*args)
        self.times.append((title, time.monotonic() - started))
        return result


def wait_console(path, text, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                if text in f.read():
                    return text
        time.sleep(0.1)
    raise SystemExit("guest never printed %r (console %s)" % (text, path))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transport-url",
                        default="rabbit://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--size-mib", type=int, default=256,
                        help="MiB the CloudStack VM wrote into its overlay")
    parser.add_argument("--keep", action="store_true",
                        help="keep domains and files for a look afterwards")
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    work = tempfile.mkdtemp(prefix="cs2os-demo-%s-" % run_id, dir="/var/tmp")
    os.chmod(work, 0o755)  # noqa: S103 - qemu runs as libvirt-qemu
    cs_root = os.path.join(work, "cloudstack-host")
    instances = os.path.join(work, "nova-compute", "instances")
    os.makedirs(instances)
    conn = libvirt.open("qemu:///system")
    steps = Steps()
    domains = []
    agent = None
    try:
        vol = steps.run(
            "CloudStack: template and a VM root volume on primary storage",
            images.make_cloudstack_volume, cs_root, 1024 * MiB, None,
            ((0xA1, 64 * MiB, args.size_mib * MiB),))
        cs_console = os.path.join(work, "cloudstack-vm.log")
        cs_name = "i-2-%s-VM" % run_id
        cs_dom = steps.run(
            "CloudStack: start VM %s (transient domain)" % cs_name,
            conn.createXML, CLOUDSTACK_XML % {
                "name": cs_name, "overlay": vol.overlay,
                "template": vol.template, "console": cs_console}, 0)
        domains.append(cs_dom)
        print("    guest says: %s" % wait_console(cs_console, vol.message))

        def boot_nova_server():
            inst = images.make_nova_instance(
                instances, vol.template, 2048 * MiB, "cs2os-demo-%s" % run_id)
            dom = conn.defineXML(inst.domain_xml())
            domains.append(dom)
            dom.create()
            return inst, dom

        inst, nova_dom = steps.run(
            "Nova: image cached in _base, server booted (root disk on it)",
            boot_nova_server)
        console = os.path.join(inst.instance_dir, "console.log")
        print("    guest says: %s"
              % wait_console(console, vol.template_message))
        steps.run("Nova: stop the server", nova_dom.destroy)
        steps.run("CloudStack: stop VM %s" % cs_name, cs_dom.destroy)

        exchange = "cs2os-demo-%s" % run_id
        agent_process.init_rpc_client(work, args.transport_url, exchange)
        api = rpcapi.AgentAPI()
        ctxt = context.get_admin_context()
        agent = agent_process.AgentProcess(
            work, "compute-%s" % run_id, args.transport_url, exchange,
            instances, [os.path.join(cs_root, "mnt")])
        steps.run("cs2os-agent: start on the compute node",
                  agent.start, api, ctxt)

        migration = "demo-%s" % run_id
        source = {"transport": "path", "path": vol.overlay}
        synced = steps.run("cs2os-agent: sync_overlay (copy A, rebase onto D)",
                           api.sync_overlay, ctxt, agent.host, migration,
                           inst.uuid, source)
        steps.run("cs2os-agent: swap_disk", api.swap_disk, ctxt,
                  agent.host, migration, inst.uuid)
        steps.run("Nova: start the server", nova_dom.create)
        said = wait_console(console, vol.message)
        print("    guest says: %s" % said)
        qemu_img.compare(vol.reference, inst.disk, "qcow2", "qcow2",
                         force_share=True)
        steps.run("cs2os-agent: cleanup", api.cleanup, ctxt, agent.host,
                  migration, inst.uuid)

        print("\nMigrated CloudStack VM %s into instance %s (domain %s): "
              "RUNNING on the migrated disk." % (cs_name, inst.uuid,
                                                inst.domain_name))
        print("  overlay file on CloudStack      %12d bytes"
              % os.path.getsize(vol.overlay))
        print("  bytes moved by the agent        %12d bytes (%.0f MB/s)"
              % (synced["bytes_copied"],
                 synced["bytes_copied"] / max(synced["seconds"], 1e-6) / 1e6))
        print("  template (not moved: Nova base) %12d bytes"
              % os.path.getsize(vol.template))
        print("  root disk: %s -> backing %s (%s), %d bytes virtual"
              % (inst.disk, synced["backing_file"], synced["backing_format"],
                 synced["virtual_size"]))
        print("  qemu-img compare source chain vs migrated disk: identical")
        print("\n  time per step:")
        for title, seconds in steps.times:
            print("  %7.2f s  %s" % (seconds, title))
        return 0
    finally:
        if agent is not None:
            agent.stop()
        rpc.cleanup()
        if not args.keep:
            for dom in domains:
                try:
                    if dom.isActive():
                        dom.destroy()
                    if dom.isPersistent():
                        dom.undefine()
                except libvirt.libvirtError:
                    pass
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept: %s and domains %s" % (work, [d.name() for d in
                                                      domains]))
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
