"""cs2os_agent.agent.live.abi: B's live XML and the device parity check."""

from xml.etree import ElementTree

import pytest

from cs2os_agent.agent.live import abi
from cs2os_agent.agent.live import errors

U1 = "11111111-1111-1111-1111-111111111111"
U2 = "22222222-2222-2222-2222-222222222222"
MAC = "02:00:4a:5e:00:01"

# A CloudStack KVM agent's domain, as libvirt gives it --migratable.
A_XML = """<domain type='kvm'>
  <name>i-2-7-VM</name>
  <uuid>%(u1)s</uuid>
  <description>web-1</description>
  <memory unit='KiB'>65536</memory>
  <vcpu placement='static'>1</vcpu>
  <sysinfo type='smbios'><system>
    <entry name='manufacturer'>Apache Software Foundation</entry>
    <entry name='uuid'>%(u1)s</entry></system></sysinfo>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <smbios mode='sysinfo'/><boot dev='hd'/></os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>EPYC</model>
    <feature policy='require' name='x2apic'/></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='writeback'/>
      <source file='/mnt/pool-1/vol-a'/>
      <backingStore type='file'><format type='qcow2'/>
        <source file='/mnt/pool-1/template'/></backingStore>
      <target dev='vda' bus='virtio'/>
      <serial>6c4b0f1a</serial>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04'
               function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'/>
    <interface type='bridge'>
      <mac address='%(mac)s'/>
      <source bridge='cloudbr0'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03'
               function='0x0'/>
    </interface>
    <serial type='pty'><source path='/dev/pts/4'/>
      <target type='isa-serial' port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/i-2-7-VM.agent'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <graphics type='vnc' port='-1' autoport='yes' listen='10.0.0.5'/>
    <video><model type='cirrus'/></video>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05'
               function='0x0'/></memballoon>
  </devices>
</domain>""" % {"u1": U1, "mac": MAC}

NOVA_XML = """<domain type='kvm'>
  <name>instance-0000002a</name>
  <uuid>%(u2)s</uuid>
  <metadata><nova:instance
      xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
    <nova:name>web-1</nova:name></nova:instance></metadata>
  <memory unit='KiB'>131072</memory>
  <vcpu>2</vcpu>
  <sysinfo type='smbios'><system>
    <entry name='manufacturer'>OpenStack Foundation</entry>
    <entry name='uuid'>%(u2)s</entry></system></sysinfo>
  <os><type arch='x86_64' machine='q35'>hvm</type><smbios mode='sysinfo'/>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' discard='unmap'/>
      <source file='/var/lib/nova/instances/%(u2)s/disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/var/lib/nova/instances/%(u2)s/disk.config'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <interface type='ethernet'>
      <mac address='%(mac)s'/>
      <target dev='tap5f1a2b3c-4d'/>
      <model type='virtio'/>
      <mtu size='1450'/>
    </interface>
    <serial type='pty'>
      <log file='/var/lib/nova/instances/%(u2)s/console.log' append='off'/>
      <target type='isa-serial' port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/nova-%(u2)s.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <graphics type='vnc' autoport='yes' listen='192.0.2.10'/>
    <video><model type='virtio'/></video>
    <memballoon model='virtio' autodeflate='on'/>
  </devices>
</domain>""" % {"u2": U2, "mac": MAC}


def _live(a=A_XML, nova=NOVA_XML):
    return ElementTree.fromstring(abi.live_xml(a, nova))


def test_identity_is_novas():
    live = _live()
    assert live.findtext("name") == "instance-0000002a"
    assert live.findtext("uuid") == U2
    assert live.find("description") is None
    meta = live.find("metadata")
    assert meta[0].tag == "{http://openstack.org/xmlns/libvirt/nova/1.1}" \
        "instance"
    assert live.find("sysinfo/system/entry[@name='uuid']").text == U2
    assert live.find("sysinfo/system/entry[@name='manufacturer']").text == \
        "OpenStack Foundation"
    assert U1 not in abi.live_xml(A_XML, NOVA_XML)


def test_guest_abi_is_as():
    live = _live()
    # machine, memory, vCPUs, CPU: A's, not Nova's (q35, 128 MiB, 2)
    assert live.find("os/type").get("machine") == "pc-i440fx-7.2"
    assert live.findtext("memory") == "65536"
    assert live.findtext("vcpu") == "1"
    assert live.findtext("cpu/model") == "EPYC"
    assert live.find("devices/video/model").get("type") == "cirrus"
    # Nova's config drive is no device of A's: not in the live XML
    assert live.find("devices/disk[@device='cdrom']") is None
    abi.check_parity(A_XML, abi.live_xml(A_XML, NOVA_XML))


def test_disk_host_side_is_novas_guest_side_as():
    disk = _live().find("devices/disk")
    assert disk.find("source").get("file") == \
        "/var/lib/nova/instances/%s/disk" % U2
    assert disk.find("backingStore") is None  # Nova's file's own chain
    driver = disk.find("driver")
    assert (driver.get("cache"), driver.get("discard"),
            driver.get("type")) == ("none", "unmap", "qcow2")
    assert disk.findtext("serial") == "6c4b0f1a"
    assert disk.find("address").get("slot") == "0x04"


def test_nic_backend_is_novas_model_mac_and_slot_as():
    nic = _live().find("devices/interface")
    assert nic.get("type") == "ethernet"
    assert nic.find("target").get("dev") == "tap5f1a2b3c-4d"
    assert nic.find("source") is None  # A's bridge is gone
    assert nic.find("mac").get("address") == MAC
    assert nic.find("model").get("type") == "virtio"
    assert nic.find("address").get("slot") == "0x03"
    assert nic.find("mtu") is None  # guest-visible: A had none


def test_console_and_channel_backends_are_novas():
    live = _live()
    serial = live.find("devices/serial")
    assert serial.find("log").get("file").endswith("/console.log")
    assert serial.find("source") is None  # A's pty path
    assert serial.find("target").get("type") == "isa-serial"
    channel = live.find("devices/channel")
    assert channel.find("source").get("path").endswith(
        "nova-%s.sock" % U2)
    assert live.find("devices/graphics").get("listen") == "192.0.2.10"


def test_nova_without_a_disk_a_has_is_refused_naming_it():
    nova = NOVA_XML.replace("<target dev='vda' bus='virtio'/>",
                            "<target dev='vdz' bus='virtio'/>")
    with pytest.raises(errors.LiveMoveRefused,
                       match="A's disk vda has no disk with target dev vda"):
        abi.live_xml(A_XML, nova)


def test_nova_without_as_mac_is_refused_naming_it():
    nova = NOVA_XML.replace(MAC, "fa:16:3e:00:00:01")
    with pytest.raises(errors.LiveMoveRefused,
                       match="MAC %s has no interface" % MAC):
        abi.live_xml(A_XML, nova)


def test_nova_without_as_channel_is_refused_naming_it():
    nova = NOVA_XML.replace("org.qemu.guest_agent.0", "other")
    with pytest.raises(errors.LiveMoveRefused,
                       match="channel virtio org.qemu.guest_agent.0"):
        abi.live_xml(A_XML, nova)


def test_uefi_nvram_without_novas_is_refused():
    a = A_XML.replace("<boot dev='hd'/>",
                      "<nvram>/var/lib/libvirt/qemu/nvram/a.fd</nvram>")
    with pytest.raises(errors.LiveMoveRefused, match="NVRAM"):
        abi.live_xml(a, NOVA_XML)


def test_parity_refuses_a_live_xml_lacking_as_balloon():
    live = abi.live_xml(A_XML, NOVA_XML)
    root = ElementTree.fromstring(live)
    devices = root.find("devices")
    devices.remove(devices.find("memballoon"))
    with pytest.raises(errors.LiveMoveRefused) as exc:
        abi.check_parity(A_XML, ElementTree.tostring(root, "unicode"))
    assert "lacks A's memballoon virtio at" in str(exc.value)
    assert "slot=0x05" in str(exc.value)


def test_parity_refuses_a_device_moved_to_another_slot():
    live = abi.live_xml(A_XML, NOVA_XML).replace('slot="0x03"',
                                                 'slot="0x09"')
    with pytest.raises(errors.LiveMoveRefused,
                       match="lacks A's interface %s model=virtio" % MAC):
        abi.check_parity(A_XML, live)


@pytest.mark.parametrize("old, new, what", [
    ('machine="pc-i440fx-7.2"', 'machine="q35"', "machine"),
    ('<vcpu placement="static">1<', '<vcpu placement="static">2<', "vCPUs"),
    (">EPYC<", ">Skylake-Client<", "CPU model"),
])
def test_parity_refuses_another_machine_cpu_or_size(old, new, what):
    # ElementTree writes attributes in double quotes
    live = abi.live_xml(A_XML, NOVA_XML)
    assert old in live
    live = live.replace(old, new)
    with pytest.raises(errors.LiveMoveRefused, match="B's %s" % what):
        abi.check_parity(A_XML, live)


def test_parity_accepts_an_extra_device_on_b():
    live = abi.live_xml(A_XML, NOVA_XML).replace(
        "</devices>", "<rng model='virtio'><backend model='random'>"
        "/dev/urandom</backend></rng></devices>")
    abi.check_parity(A_XML, live)


def test_cookie_is_as_live_cpu():
    assert abi.cookie(A_XML).startswith("<cookie><cpu mode=\"custom\"")
    assert "EPYC" in abi.cookie(A_XML)
    assert abi.cookie("<domain><devices/></domain>") == ""


def test_xml_that_does_not_parse_is_refused():
    with pytest.raises(errors.LiveMoveRefused, match="Nova's XML does not"):
        abi.live_xml(A_XML, "<domain>")
