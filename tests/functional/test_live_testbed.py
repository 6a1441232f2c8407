"""The live mode's testbed (tools/testbed/live_kvm): the CloudStack
stand-in's KVM host on a second libvirtd, its VM running the counter guest
on a CloudStack volume, and the first hop in the direction live mode makes
it: from that libvirtd to the main one (the minicloud's Nova's), client-
managed (virDomainMigrate3 with a destination connection, no PEER2PEER),
the RAM stream and the NBD disk copy on 127.0.0.1.  test_live_hop.py goes
the other way (main -> second, peer-to-peer).

Proven here: the guest's counter goes on across the hop with no boot
banner, its disk (with a write made while it ran) lands on a Nova-style
disk, and its counter, which it writes to LBA 1, goes on there; the
stand-in then reports the VM Stopped, and stopVirtualMachine
forced=true of it succeeds without touching the temporary domain (A's
UUID, on the other libvirtd); the hop back onto A's own overlay (whose
header names /mnt/<pool>/<template>) brings it home under its own name.
Heavy (KVM guests): run under the lock.
"""

import os
import subprocess
import uuid

import libvirt
import pytest

from cs2os_agent import virt
from cs2os_agent.cloudstack import client as cloudstack_client
from tools.testbed import cloudstack_api
from tools.testbed import harness
from tools.testbed import images
from tools.testbed import live_guest
from tools.testbed import live_kvm
from tools.testbed import warm_chain

MiB = images.MiB


@pytest.fixture(scope="module")
def kvm_host(cloudstack_root):
    daemon = live_kvm.start_kvm_host(harness.RUN_ID + "-tb", cloudstack_root)
    yield daemon
    base = daemon.path()
    live_kvm.stop_kvm_host(daemon)
    assert not os.path.exists(base)


@pytest.fixture
def stand_in(kvm_host, cloudstack_root):
    api = cloudstack_api.FakeCloudStack(
        live_kvm.kvm_on(kvm_host, cloudstack_root))
    api.admin = api.add_account("admin")
    api.host = api.add_host(api.add_zone("zone-%s" % harness.RUN_ID),
                            "kvm-%s" % harness.RUN_ID)
    api.endpoint = api.serve()
    yield api
    api.shutdown()


def _client(api):
    return cloudstack_client.CloudStackClient(
        api.endpoint, api.admin.apikey, api.admin.secretkey,
        job_poll_interval=0.2)


def _tmp_domain(conn, vm_uuid):
    return [d for d in conn.listAllDomains(0) if d.UUIDString() == vm_uuid]


def test_hop_from_the_kvm_host_to_the_main_libvirtd(
        conn, kvm_host, stand_in, cloudstack_root, workdir):
    volume = live_kvm.make_live_volume(cloudstack_root)
    vm = stand_in.add_kvm_vm("live-tb-%s" % uuid.uuid4().hex[:6], volume,
                             stand_in.admin, stand_in.host)
    consoles = [stand_in.kvm.console(vm.instancename)] + [
        os.path.join(workdir, "%s-%s.log" % (vm.instancename, n))
        for n in ("tmp", "back")]
    watch = live_guest.SerialWatch(*consoles)
    watch.start()
    nova = None
    try:
        watch.wait_counter(consoles[0], 20)
        a = kvm_host.conn.lookupByName(vm.instancename)
        assert a.UUIDString() == vm.id and not a.isPersistent()
        assert stand_in.vm_state(vm) == "Running"
        assert conn.getCapabilities() != kvm_host.conn.getCapabilities()
        # A write by the running guest, into the overlay.
        warm_chain.guest_write(a, "write -P 0x77 40M 1M")
        images.qemu_io_write(volume.reference, "qcow2", 0x77, 40 * MiB, MiB)

        # Nova's layout: an overlay on the raw base, written by its boot.
        nova = images.make_nova_instance(
            os.path.join(workdir, "live-tb-instances"), volume.template,
            64 * MiB, "live-tb")
        images.qemu_io_write(nova.disk, "qcow2", 0x5A, 0, MiB)
        tmp = live_kvm.client_hop(a, conn, "tmp-" + vm.instancename,
                                  {"vda": nova.disk},
                                  files={consoles[0]: consoles[1]})
        assert (tmp.name(), tmp.UUIDString()) == ("tmp-" + vm.instancename,
                                                   vm.id)
        assert virt.state(tmp) == virt.RUNNING and not tmp.isPersistent()
        assert _tmp_domain(kvm_host.conn, vm.id) == []
        last = watch.counters(consoles[0])[-1][1]
        watch.wait_counter(consoles[1], last + 30, timeout=10)
        assert watch.banners(consoles[1]) == 0
        values = watch.joined_counters(*consoles[:2])
        assert values == list(range(values[0], values[0] + len(values)))
        gap = (watch.counters(consoles[1])[0][0]
               - watch.counters(consoles[0])[-1][0])
        print("\nclient-managed hop kvm host -> main: serial gap %.1f ms, "
              "counter %d -> %d" % (gap * 1000, last, last + 1))
        tmp.suspend()
        try:
            # The guest wrote its counter to LBA 1 on A and goes on on the
            # Nova disk: the last it printed, or the one before.
            on_disk = live_kvm.disk_counter(nova.disk)
            printed = watch.joined_counters(*consoles[:2])[-1]
            assert on_disk in (printed, printed - 1), (on_disk, printed)
            images.write_bytes(volume.reference, 512, images.read_bytes(
                nova.disk, 512, 512))
            done = subprocess.run(
                ["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2",
                 volume.reference, nova.disk], capture_output=True,
                text=True, check=False)
        finally:
            tmp.resume()
        assert done.returncode == 0, done.stdout + done.stderr

        # CloudStack: the domain left its host, the VM shows Stopped; a
        # forced stop succeeds and touches nothing else.
        assert stand_in.vm_state(vm) == "Stopped"
        entry = _client(stand_in).stop_vm(vm.id, forced=True)
        assert entry["state"] == "Stopped"
        assert virt.state(tmp) == virt.RUNNING
        watch.wait_counter(consoles[1], last + 60, timeout=10)

        # Back onto A's own overlay, under its own name: the header's
        # /mnt/<pool>/<template> opens in the KVM host's namespace.
        before = os.stat(volume.overlay).st_blocks * 512
        back = live_kvm.client_hop(tmp, kvm_host.conn, vm.instancename,
                                   {"vda": volume.overlay},
                                   files={consoles[1]: consoles[2]})
        # A full copy (NON_SHARED_DISK) back onto the overlay: it takes
        # up the template's data too (what a rollback costs on NFS).
        print("A's overlay: %.1f MiB allocated before the hop, %.1f MiB "
              "after the hop back" % (before / MiB, os.stat(
                  volume.overlay).st_blocks * 512 / MiB))
        assert (back.name(), back.UUIDString()) == (vm.instancename, vm.id)
        assert virt.state(back) == virt.RUNNING
        assert _tmp_domain(conn, vm.id) == []
        last = watch.counters(consoles[1])[-1][1]
        watch.wait_counter(consoles[2], last + 30, timeout=10)
        assert watch.banners(consoles[2]) == 0
        values = watch.joined_counters(*consoles)
        assert values == list(range(values[0], values[0] + len(values)))
        assert stand_in.vm_state(vm) == "Running"
        warm_chain.read_back(nova.disk, "read -P 0x77 40M 1M")
    finally:
        watch.stop()
        for dom in _tmp_domain(conn, vm.id):
            live_guest.remove_domain(dom)


def test_forced_stop_of_a_vm_whose_domain_left(conn, kvm_host, stand_in,
                                               cloudstack_root):
    """Only the domain named after the VM on the KVM host is the VM's: a
    domain elsewhere with its UUID (the hop's temporary one on the Nova
    host) and one of the same name on the Nova host stay running."""
    volume = live_kvm.make_live_volume(cloudstack_root)
    vm = stand_in.add_kvm_vm("live-tb-%s" % uuid.uuid4().hex[:6], volume,
                             stand_in.admin, stand_in.host)
    a = kvm_host.conn.lookupByName(vm.instancename)
    a_xml = a.XMLDesc(0)
    a.destroy()  # the domain left the host (migrated away)
    elsewhere = conn.createXML(a_xml, 0)  # A's name and UUID, other host
    try:
        assert stand_in.vm_state(vm) == "Stopped"
        entry = _client(stand_in).stop_vm(vm.id, forced=True)
        assert entry["state"] == "Stopped"
        assert virt.state(elsewhere) == virt.RUNNING
        with pytest.raises(libvirt.libvirtError):
            kvm_host.conn.lookupByName(vm.instancename)
    finally:
        live_guest.remove_domain(elsewhere)
