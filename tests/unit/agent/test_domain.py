"""cs2os_agent.agent.domain: Nova's domain as the agent reads it."""

import libvirt
import pytest

from cs2os_agent import virt
from cs2os_agent.agent import domain
from cs2os_agent.common import exception
from tests.fakes import libvirt as fakes

NOVA_XML = """<domain type='kvm'><devices>
  <disk type='file' device='cdrom'><source file='/iso'/></disk>
  <disk type='file' device='disk'>
    <driver name='qemu' type='qcow2' cache='none'/>
    <source file='/var/lib/nova/instances/u/disk'/>
    <target dev='vda' bus='virtio'/>
  </disk>
  <disk type='file' device='disk'>
    <source file='/var/lib/nova/instances/u/disk.eph0'/>
  </disk>
</devices></domain>"""

RBD_XML = """<domain type='kvm'><devices>
  <disk type='network' device='disk'>
    <driver name='qemu' type='raw'/>
    <source protocol='rbd' name='vms/u_disk'/>
  </disk>
</devices></domain>"""


def test_root_disk_is_the_first_disk_device():
    assert domain.root_disk(NOVA_XML) == (
        "/var/lib/nova/instances/u/disk", "qcow2")


def test_network_root_disk_is_not_adoptable():
    assert domain.root_disk(RBD_XML) == (None, None)


def test_domain_without_disks():
    assert domain.root_disk("<domain><devices/></domain>") == (None, None)


UUID = "0b5e3c1a-7d2f-4f59-a1c4-6e8d9b0a2f31"


def nova_domain(state=libvirt.VIR_DOMAIN_SHUTOFF):
    dom = fakes.FakeDomain(name="instance-0001", uuid=UUID, xml=NOVA_XML)
    dom.state_ = state
    return dom


def host(monkeypatch, *domains):
    conn = fakes.install(monkeypatch, fakes.FakeConnection(*domains))
    return domain.LibvirtHost("qemu:///system", "cmp-1"), conn


def test_domain_info_of_a_shut_off_instance(monkeypatch):
    libvirt_host, conn = host(monkeypatch, nova_domain())
    info = libvirt_host.domain_info(UUID)
    assert info == domain.DomainInfo(
        name="instance-0001", state=domain.SHUTOFF,
        root_disk_path="/var/lib/nova/instances/u/disk",
        root_disk_format="qcow2")
    # One connection per call, closed after it.
    assert (conn.uri, conn.opened, conn.closed) == ("qemu:///system", 1, 1)


def test_the_state_is_virts_vocabulary(monkeypatch):
    libvirt_host, _ = host(monkeypatch,
                           nova_domain(libvirt.VIR_DOMAIN_SHUTDOWN))
    assert domain.SHUTOFF == virt.SHUT_OFF
    assert libvirt_host.domain_info(UUID).state == virt.SHUTTING_DOWN


def test_an_instance_without_a_domain(monkeypatch):
    libvirt_host, conn = host(monkeypatch)
    with pytest.raises(exception.InstanceNotFound) as err:
        libvirt_host.domain_info(UUID)
    assert str(err.value) == "Instance %s has no libvirt domain on cmp-1" \
        % UUID
    assert conn.closed == 1


def test_libvirt_errors_name_the_operation(monkeypatch):
    dom = nova_domain()
    libvirt_host, conn = host(monkeypatch, dom)
    dom.fail["XMLDesc"] = "connection reset"
    with pytest.raises(exception.LibvirtError) as err:
        libvirt_host.domain_info(UUID)
    assert str(err.value) == "libvirt read domain %s failed: connection " \
        "reset" % UUID
    conn.fail["open"] = "Failed to connect socket"
    with pytest.raises(exception.LibvirtError) as err:
        libvirt_host.version()
    assert str(err.value) == "libvirt connect to qemu:///system failed: " \
        "Failed to connect socket"


def test_a_network_root_disk_is_refused(monkeypatch):
    dom = nova_domain()
    dom.xml = RBD_XML
    libvirt_host, _ = host(monkeypatch, dom)
    with pytest.raises(exception.InstanceDiskNotFound) as err:
        libvirt_host.domain_info(UUID)
    assert "images_type = qcow2" in str(err.value)


def test_version(monkeypatch):
    libvirt_host, conn = host(monkeypatch)
    assert libvirt_host.version() == conn.lib_version
    assert conn.closed == 1
