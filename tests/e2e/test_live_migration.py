"""Live migration end to end (issue 20): a running CloudStack guest moves
into Nova's domain without a reboot.

The chain (tests/e2e/live_fixtures.py): the stand-in CloudStack whose KVM
host is a second libvirtd (its VM A runs the counter guest on a CloudStack
volume), cs2os-conductor and cs2os-agent as their own processes, the
minicloud's Nova on the main libvirtd.  ``"mode": "live"``: validate,
image, ports, boot (server created, then stopped), target, hop (the agent
live-migrates A from the KVM host's libvirtd to its own, client-managed),
move (A's state into Nova's domain B), then CloudStack retires the VM.

Evidence of no reboot: the guest's RAM counter continues from A's console
through the temporary domain's to B's (Nova's console.log), with no boot
banner; the pauses are printed.  The guest also writes its counter to
its disk's LBA 1: Nova's disk holds B's, past A's last.  Heavy: run
under the lock.
"""

import hashlib
import os

import libvirt
import pytest

from cs2os_agent import qemu_img
from cs2os_agent import virt
from tests.e2e import live_fixtures
from tests.e2e.live_fixtures import Consoles
from tests.e2e.live_fixtures import new_live_vm
from tests.e2e.live_fixtures import restart_agent
from tools.testbed import images
from tools.testbed import live_kvm
from tools.testbed import warm_chain
from tools.testbed.harness import wait_for
from tools.testbed.harness import wait_state

MiB = images.MiB
# conftest's fixtures overridden: the KVM host on a second libvirtd.
agent = live_fixtures.agent
cloud = live_fixtures.cloud
conductor = live_fixtures.conductor
kvm_host = live_fixtures.kvm_host
FLAVOR_DISK = 1024 * MiB  # m1.tiny's, the flavor the conductor picks
LIVE_STEPS = ("validate", "image", "ports", "boot", "target", "hop", "move")


@pytest.fixture(scope="module")
def nova_conn(minicloud):
    """The main libvirtd: the minicloud's Nova's."""
    conn = libvirt.open("qemu:///system")
    yield conn
    conn.close()


def _get(conductor_api, ctxt, mid):
    return conductor_api.get_migration(ctxt, mid)


def _domains(conn, dom_uuid):
    return [d for d in conn.listAllDomains(0) if d.UUIDString() == dom_uuid]


def _start(conductor_api, ctxt, minicloud, vm):
    created = conductor_api.create_migration(ctxt, {
        "source": vm.name, "host": minicloud.compute_host, "mode": "live"})
    assert created["mode"] == "live"
    return created["id"]


def _until_step(conductor_api, ctxt, mid, steps, timeout=300):
    """The record once it is at one of ``steps``."""
    seen = []

    def reached():
        seen[:] = [_get(conductor_api, ctxt, mid)]
        return seen[0]["step"] in steps or seen[0]["state"] in (
            "failed", "succeeded", "cancelled")

    wait_for(reached, timeout, "step %s" % (steps,), interval=0.05)
    m = seen[0]
    assert m["step"] in steps, "migration %s at %s before %s: %s; %s" % (
        m["state"], m["step"], steps, m["error"], [
            (e["step"], e["message"]) for e in m["events"]][-6:])
    return m


def _started(conductor_api, ctxt, minicloud, vm, consoles):
    """(migration id, server id) of a live migration of ``vm``, once at
    the target or hop step: from then on the guest may print into the
    instance directory (the temporary domain's console, then B's
    console.log), which ``consoles`` follows too."""
    mid = _start(conductor_api, ctxt, minicloud, vm)
    record = _until_step(conductor_api, ctxt, mid, ("target", "hop"))
    server_id = record["resources"].get("server_id")
    assert server_id, record
    consoles.add_dir(os.path.join(minicloud.instances_path, server_id))
    return mid, server_id


def _migrate(conductor_api, ctxt, minicloud, nova_conn, vm):
    """A live migration of ``vm`` that succeeds: (record, Consoles,
    server id, B's persistent XML as Nova defined it)."""
    consoles = Consoles(vm.console)
    consoles.start()
    try:
        mid, server_id = _started(conductor_api, ctxt, minicloud, vm,
                                  consoles)
        b = nova_conn.lookupByUUIDString(server_id)
        nova_xml = b.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        done = wait_state(conductor_api, ctxt, mid, ("succeeded", "failed"))
        assert done["state"] == "succeeded", "%s\n%s" % (
            done["error"], "\n".join("%s: %s" % (e["step"], e["message"])
                                     for e in done["events"]))
        steps = [e["step"] for e in done["events"] if e["message"] == "done"]
        print("\nlive steps: %s" % steps)
        assert [s for s in steps if s in LIVE_STEPS] == list(LIVE_STEPS)
        consoles.wait_beyond(consoles.last() + 50, timeout=10)
    finally:
        consoles.stop()
    return done, consoles, server_id, nova_xml


def test_live_migration_without_a_reboot(conductor, conductor_api, ctxt,
                                         cloud, minicloud, cloudstack_root,
                                         kvm_host, nova_conn):
    # The volume of the flavor's root disk size (m1.tiny: 1 GiB): the
    # hop's disk copy needs A and Nova's disk of one size (see
    # test_live_migration_of_a_volume_smaller_than_the_flavor).
    vm = new_live_vm(cloud, cloudstack_root, volume_size=FLAVOR_DISK)
    a = kvm_host.conn.lookupByName(vm.instancename)
    vm.haenable = True  # CloudStack HA on: taken off before the hop
    # A write by the running guest, into its overlay: Nova's disk has it.
    warm_chain.guest_write(a, "write -P 0x77 40M 1M")
    done, consoles, server_id, nova_xml = _migrate(
        conductor_api, ctxt, minicloud, nova_conn, vm)

    # Nova: the server ACTIVE, its own domain running the guest.
    server = minicloud.conn.compute.get_server(server_id)
    assert server.status == "ACTIVE"
    assert server.compute_host == minicloud.compute_host
    b = nova_conn.lookupByUUIDString(server_id)
    assert virt.state(b) == virt.RUNNING
    assert b.name() == server.instance_name
    # Its persistent definition is Nova's, as before the move.
    assert b.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == nova_xml
    # The guest's counter, A -> temporary domain -> B: no reboot.
    pauses = consoles.assert_continuous()
    paths = [p for _t, p, _v in consoles.counters()]
    assert paths[0] == vm.console
    assert paths[-1] == os.path.join(minicloud.instances_path, server_id,
                                     "console.log")
    print(consoles.describe())
    assert len(consoles.switches()) == 2  # A -> temporary -> B
    assert pauses[0][0] < 2.0
    for event in done["events"]:
        if event["step"] in ("hop", "move"):
            print("  %s: %s" % (event["step"], event["message"]))

    # The disk: Nova's, on its base, with the guest's write.
    disk = os.path.join(minicloud.instances_path, server_id, "disk")
    info = qemu_img.info(disk, "qcow2", force_share=True)
    assert info["backing-filename"] == os.path.join(
        minicloud.instances_path, "_base", hashlib.sha1(
            done["resources"]["image_id"].encode()).hexdigest())
    warm_chain.read_back(disk, "read -P 0x77 40M 1M")
    # ... and the counter B's guest goes on writing to LBA 1 of it.
    a_last = max(v for _t, p, v in consoles.counters() if p == vm.console)
    assert live_kvm.disk_counter(disk) > a_last
    # A is gone from the KVM host, CloudStack's VM retired.
    assert _domains(kvm_host.conn, vm.id) == []
    assert _domains(nova_conn, vm.id) == []
    assert cloud.vm_state(vm) in ("Unmanaged", "Expunging"), \
        cloud.vm_state(vm)
    assert vm.haenable is False


def test_failed_move_rolls_back_to_the_kvm_host(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        kvm_host, nova_conn, agent, agent_api, workdir):
    # The move's socket where the temporary domain's QEMU (libvirt-qemu)
    # cannot reach it: [live] run_dir under a directory only root may
    # walk through.  The hop works; A's state never reaches B.
    private = os.path.join(workdir, "live-private")
    os.makedirs(private, mode=0o700, exist_ok=True)
    restart_agent(agent, agent_api, kvm_host,
                  run_dir=os.path.join(private, "run"))
    try:
        vm = new_live_vm(cloud, cloudstack_root, volume_size=FLAVOR_DISK)
        vm.haenable = True  # off for the hop, on again after the rollback
        consoles = Consoles(vm.console)
        consoles.start()
        try:
            mid, server_id = _started(conductor_api, ctxt, minicloud, vm,
                                      consoles)
            done = wait_state(conductor_api, ctxt, mid,
                              ("succeeded", "failed", "rolled_back"))
            print("\nrolled back: %s %s; %s" % (
                done["state"], done["error"],
                [(e["step"], e["message"]) for e in done["events"]][-8:]))
            assert done["state"] != "succeeded"
            assert any(e["step"] == "move" for e in done["events"])
            consoles.wait_beyond(consoles.last() + 50, timeout=10)
        finally:
            consoles.stop()
        # A runs on the KVM host again, under its own name, no reboot.
        a = kvm_host.conn.lookupByName(vm.instancename)
        assert a.UUIDString() == vm.id and virt.state(a) == virt.RUNNING
        assert _domains(nova_conn, vm.id) == []
        pauses = consoles.assert_continuous()
        print(consoles.describe())
        # A's own console file again (the hop back's), after the
        # temporary domain's.
        went = [p for _s, _v, _a, p in consoles.switches()]
        assert len(went) == 2 and went[-1] == vm.console, went
        assert pauses[0][0] < 2.0
        assert cloud.vm_state(vm) == "Running"
        assert vm.haenable is True
        # Nothing left in Nova.
        wait_for(lambda: minicloud.conn.compute.find_server(server_id)
                 is None, 120, "the server to be deleted")
        assert not os.path.exists(os.path.join(minicloud.instances_path,
                                               server_id))
    finally:
        restart_agent(agent, agent_api, kvm_host)


def test_live_migration_of_a_volume_smaller_than_the_flavor(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        kvm_host, nova_conn):
    """A 64 MiB volume (the template's size) into m1.tiny's 1 GiB disk:
    the common case, a CloudStack root volume smaller than the flavor's
    root disk.  The hop's disk copy needs a target of A's size; once B
    runs, the agent grows it online to the flavor's."""
    vm = new_live_vm(cloud, cloudstack_root)
    done, consoles, server_id, _xml = _migrate(
        conductor_api, ctxt, minicloud, nova_conn, vm)
    consoles.assert_continuous()
    b = nova_conn.lookupByUUIDString(server_id)
    assert virt.state(b) == virt.RUNNING
    disk = os.path.join(minicloud.instances_path, server_id, "disk")
    assert b.blockInfo(disk)[0] == FLAVOR_DISK
    assert _domains(kvm_host.conn, vm.id) == []
