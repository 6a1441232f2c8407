"""Where Nova attached a Cinder volume, read from a domain XML as Nova
writes it; what qemu-img is given to open it; a Ceph keyring's key.

The real thing (a data disk written into an RBD volume of a DevStack
Ceph) is tests/e2e/test_data_disks.py.
"""

import json

import pytest

from cs2os_agent.agent import volume_target
from cs2os_agent.common import exception

INSTANCE = "5f0c1c55-7d0f-4d3e-9a36-1b7c0c7a2b11"
VOLUME = "0d7a3e2c-4b1f-4a55-8b1e-6f2f8f9d3c01"
OTHER = "9b1d2e3f-0000-4000-8000-00000000000a"
SECRET = "457eb676-33da-42ec-9a8c-9293d545c337"
# What a keyring holds (and a secret's value): never in a command line.
KEY = "AQBhbG9uZ2tleWZvcnRlc3RpbmcxMjM0NTY3ODkwYWI9PQ=="

ROOT_DISK = """
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/var/lib/nova/instances/%s/disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>""" % INSTANCE

RBD_DISK = """
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback' discard='unmap'/>
      <auth username='cinder'>
        <secret type='ceph' uuid='%s'/>
      </auth>
      <source protocol='rbd' name='volumes/volume-%s'>
        <host name='192.0.2.10' port='6789'/>
        <host name='192.0.2.11' port='3300'/>
        <host name='192.0.2.12'/>
      </source>
      <target dev='vdb' bus='virtio'/>
      <serial>%s</serial>
    </disk>""" % (SECRET, VOLUME, VOLUME)


def domain(*disks):
    return ("<domain type='kvm'><name>instance-00000001</name>"
            "<uuid>%s</uuid><devices>%s</devices></domain>"
            % (INSTANCE, "".join(disks)))


def disk(kind, source, fmt="raw", serial=VOLUME, dev="vdc"):
    driver = "<driver name='qemu' type='%s'/>" % fmt if fmt else ""
    target = "<target dev='%s' bus='virtio'/>" % dev if dev else ""
    return ("<disk type='%s' device='disk'>%s%s%s<serial>%s</serial>"
            "</disk>" % (kind, driver, source, target, serial))


def find(xml):
    return volume_target.find(xml, VOLUME, INSTANCE)


def refused(xml):
    with pytest.raises(exception.VolumeNotWritable) as info:
        find(xml)
    message = str(info.value)
    assert VOLUME in message and INSTANCE in message
    return message


# -- find -----------------------------------------------------------------


def test_an_rbd_volume_disk_as_nova_writes_it():
    target = find(domain(ROOT_DISK, RBD_DISK))
    assert target == volume_target.VolumeTarget(
        volume_id=VOLUME, kind="rbd", path="volumes/volume-%s" % VOLUME,
        fmt="raw",
        hosts=(("192.0.2.10", "6789"), ("192.0.2.11", "3300"),
               ("192.0.2.12", "6789")),
        user="cinder", secret_uuid=SECRET, target_dev="vdb")
    assert target.describe() == (
        "volume %s (rbd:volumes/volume-%s, vdb)" % (VOLUME, VOLUME))


def test_a_block_volume_disk():
    target = find(domain(ROOT_DISK, disk(
        "block", "<source dev='/dev/disk/by-path/ip-192.0.2.5-lun-1'/>")))
    assert (target.kind, target.path, target.fmt, target.target_dev) == (
        "block", "/dev/disk/by-path/ip-192.0.2.5-lun-1", "raw", "vdc")
    assert (target.hosts, target.user, target.secret_uuid) == ((), None,
                                                               None)
    assert target.describe() == (
        "volume %s (/dev/disk/by-path/ip-192.0.2.5-lun-1, vdc)" % VOLUME)


def test_a_file_volume_disk_in_qcow2_on_nfs():
    path = "/var/lib/nova/mnt/abc/volume-%s" % VOLUME
    target = find(domain(disk("file", "<source file='%s'/>" % path,
                              fmt="qcow2", dev=None)))
    assert (target.kind, target.path, target.fmt) == ("file", path, "qcow2")
    assert target.describe() == "volume %s (%s, no target)" % (VOLUME, path)


def test_a_disk_without_a_driver_is_raw():
    target = find(domain(disk("file", "<source file='/v/x'/>", fmt=None)))
    assert target.fmt == "raw"


def test_the_disk_is_picked_by_its_serial_not_its_position():
    other = disk("file", "<source file='/other'/>", serial=OTHER, dev="vdb")
    mine = disk("file", "<source file='/mine'/>", dev="vdc")
    assert find(domain(other, mine)).path == "/mine"
    assert volume_target.find(domain(other, mine), OTHER,
                              INSTANCE).path == "/other"


def test_serial_surrounded_by_whitespace_still_matches():
    xml = domain(disk("file", "<source file='/mine'/>",
                      serial="\n  %s  \n" % VOLUME))
    assert find(xml).path == "/mine"


def test_a_volume_not_in_the_domain_is_not_attached():
    xml = domain(ROOT_DISK, disk("file", "<source file='/o'/>",
                                 serial=OTHER))
    with pytest.raises(exception.VolumeNotAttached) as info:
        find(xml)
    assert str(info.value) == (
        "Cinder volume %s is not attached to instance %s: its domain has "
        "no disk with that serial" % (VOLUME, INSTANCE))


def test_a_disk_without_source_is_refused():
    assert refused(domain(disk("file", ""))).endswith(
        "its <disk> has no <source>")


def test_a_format_other_than_raw_or_qcow2_is_refused():
    message = refused(domain(disk("file", "<source file='/v'/>",
                                  fmt="vmdk")))
    assert message.endswith("its format is vmdk, not raw or qcow2")


def test_a_network_disk_other_than_rbd_is_refused():
    message = refused(domain(disk(
        "network", "<source protocol='iscsi' name='iqn.2010-10.org:v/1'/>")))
    assert message.endswith("a iscsi network disk; cs2os writes RBD ones")


def test_an_rbd_disk_without_an_image_name_is_refused():
    message = refused(domain(disk("network", "<source protocol='rbd'/>")))
    assert "a rbd network disk; cs2os writes RBD ones" in message


def test_an_unsupported_disk_type_is_refused():
    message = refused(domain(disk("volume", "<source pool='p' volume='v'/>")))
    assert message.endswith(
        "a volume disk; cs2os writes rbd, block and file ones")


@pytest.mark.parametrize("kind,source", [
    ("block", "<source/>"),
    ("block", "<source dev='dev/sdb'/>"),
    ("file", "<source file='volume-x'/>"),
])
def test_a_block_or_file_disk_needs_an_absolute_path(kind, source):
    message = refused(domain(disk(kind, source)))
    assert message.endswith("its %s source names no absolute path" % kind)


# -- qemu_target ----------------------------------------------------------


def opened(name):
    assert name.startswith("json:")
    return json.loads(name[len("json:"):])


def test_qemu_target_of_rbd_names_the_key_secret_not_the_key():
    target = find(domain(RBD_DISK))
    name, needs_key = volume_target.qemu_target(target)
    assert needs_key is True
    assert opened(name) == {
        "driver": "raw",
        "file": {
            "driver": "rbd", "pool": "volumes",
            "image": "volume-%s" % VOLUME,
            "server": [{"host": "192.0.2.10", "port": "6789"},
                       {"host": "192.0.2.11", "port": "3300"},
                       {"host": "192.0.2.12", "port": "6789"}],
            "user": "cinder",
            "key-secret": volume_target.SECRET_ID,
            "auth-client-required": ["cephx"],
        },
    }
    # Neither the key nor libvirt's secret uuid is in what qemu-img sees.
    assert KEY not in name and SECRET not in name
    assert "key" not in opened(name)["file"]


def test_qemu_target_of_rbd_without_auth_or_hosts_needs_no_key():
    target = volume_target.VolumeTarget(VOLUME, "rbd", "pool/img", "raw")
    name, needs_key = volume_target.qemu_target(target)
    assert needs_key is False
    assert opened(name) == {"driver": "raw", "file": {
        "driver": "rbd", "pool": "pool", "image": "img"}}


def test_qemu_target_of_a_qcow2_file_is_its_path():
    target = volume_target.VolumeTarget(VOLUME, "file", "/nfs/v", "qcow2")
    assert volume_target.qemu_target(target) == ("/nfs/v", False)


def test_qemu_target_of_a_block_device_is_its_path():
    target = volume_target.VolumeTarget(VOLUME, "block", "/dev/sdb", "raw")
    assert volume_target.qemu_target(target) == ("/dev/sdb", False)


# -- keyring_key ----------------------------------------------------------


def test_keyring_key_reads_the_users_section(tmp_path):
    # As ceph auth get-or-create writes it: tab-indented, caps quoted.
    (tmp_path / "ceph.client.cinder.keyring").write_text(
        "[client.admin]\n\tkey = AQAAdmin==\n"
        "[client.cinder]\n\tkey = %s\n"
        "\tcaps mon = \"profile rbd\"\n"
        "\tcaps osd = \"profile rbd pool=volumes\"\n" % KEY)
    assert volume_target.keyring_key(str(tmp_path), "cinder") == KEY


def test_keyring_key_without_the_file_is_none(tmp_path):
    (tmp_path / "ceph.client.admin.keyring").write_text(
        "[client.admin]\n\tkey = %s\n" % KEY)
    assert volume_target.keyring_key(str(tmp_path), "cinder") is None


def test_keyring_without_the_users_section_is_refused(tmp_path):
    path = tmp_path / "ceph.client.cinder.keyring"
    path.write_text("[client.admin]\n\tkey = %s\n" % KEY)
    with pytest.raises(exception.VolumeNotWritable) as info:
        volume_target.keyring_key(str(tmp_path), "cinder")
    assert str(info.value).endswith(
        "%s holds no key for client.cinder" % path)
    assert KEY not in str(info.value)


def test_keyring_with_the_section_but_no_key_is_refused(tmp_path):
    (tmp_path / "ceph.client.cinder.keyring").write_text(
        "[client.cinder]\n\tcaps mon = \"profile rbd\"\n")
    with pytest.raises(exception.VolumeNotWritable,
                       match="holds no key for client.cinder"):
        volume_target.keyring_key(str(tmp_path), "cinder")


def test_a_keyring_that_is_no_ini_file_is_refused(tmp_path):
    (tmp_path / "ceph.client.cinder.keyring").write_text("key = x\n")
    with pytest.raises(exception.VolumeNotWritable,
                       match="holds no key for client.cinder"):
        volume_target.keyring_key(str(tmp_path), "cinder")
