from cs2os_agent.agent import domain

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
