"""The CloudStack KVM host as the conductor reaches it (sourcehost/kvmhost.py):
its libvirt URI, checked, and the root disk, an RBD disk and the mirror
export read from a domain's live XML (the fake libvirt,
tests/fakes/libvirt.py).
"""

import os
import shlex
import urllib.parse

import pytest

from cs2os_agent import kvmuri
from cs2os_agent.common import exception
from cs2os_agent.common import nbd
from cs2os_agent.sourcehost import kvmhost
from tests.fakes import libvirt as fakes
from tests.unit.conductor.flow.warm_world import EXPORT
from tools.testbed import cloudstack_kvm


def test_uri_for_fills_in_the_host():
    template = "qemu+ssh://root@{host}:2222/system?keyfile=/id"
    assert kvmuri.uri_for(template, "10.0.0.5") == template.replace(
        "{host}", "10.0.0.5")
    assert "root@[fd00::5]:2222" in kvmuri.uri_for(template, "fd00::5")
    assert kvmuri.redact(kvmuri.uri_for(template, "h")) == \
        "qemu+ssh://root@h:2222/system"
    assert kvmuri.uri_for("qemu:///system?x={host}", "h")


def test_known_hosts_becomes_an_ssh_that_trusts_that_file_alone():
    uri = kvmuri.uri_for("qemu+ssh://root@{host}/system?keyfile=/k/id&"
                          "known_hosts=/k/known hosts", "h")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    assert "known_hosts" not in query and query["keyfile"] == ["/k/id"]
    command = query["command"][0]
    assert os.stat(command).st_mode & 0o777 == 0o700
    assert os.stat(os.path.dirname(command)).st_mode & 0o777 == 0o700
    with open(command) as f:
        script = f.read()
    assert shlex.split(script.splitlines()[1]) == [
        "exec", "ssh", "-o", "UserKnownHostsFile=/k/known hosts",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "$@"]
    # One wrapper per file, reused.
    assert kvmuri.uri_for("qemu+ssh://root@{host}/system?"
                           "known_hosts=/k/known hosts", "h2").endswith(
        urllib.parse.urlencode({"command": command}, safe="/"))


@pytest.mark.parametrize("template, words", [
    ("qemu+ssh://root@h/system", "must contain {host}"),
    ("qemu+ssh://root@{host}/system?no_verify=1", "no_verify"),
    ("qemu+ssh://root@{host}/system?known_hosts=/kh&command=/bin/ssh",
     "both known_hosts and command"),
    ("qemu+libssh://root@{host}/system?known_hosts=/kh",
     "qemu+libssh://: libvirt's libssh transport stalls"),
    ("qemu+libssh2://root@{host}/system?known_hosts=/kh",
     "qemu+libssh2://"),
])
def test_uri_for_refuses_unverified_host_keys_and_libssh(template, words):
    with pytest.raises(exception.Invalid) as err:
        kvmuri.uri_for(template, "10.0.0.5")
    assert words in str(err.value)


@pytest.mark.parametrize("host", ["", None, "a/b", "u@h", "h?x"])
def test_uri_for_refuses_odd_host_addresses(host):
    with pytest.raises(exception.Invalid):
        kvmuri.uri_for("qemu+ssh://{host}/system", host)


def test_root_disk_and_mirror_export_from_the_live_xml():
    dom = fakes.FakeDomain()
    assert kvmhost.root_disk(dom, "pool-1", "vol-1") == "vda"
    # The stand-in's layout: the host's /mnt lives under another root.
    dom.file = "/var/tmp/x/mnt/pool-1/vol-1"
    assert kvmhost.root_disk(dom, "pool-1", "vol-1") == "vda"
    with pytest.raises(exception.Invalid):
        kvmhost.root_disk(dom, "pool-2", "vol-1")
    assert kvmhost.mirror_export(dom, "vda") is None
    dom.blockCopy("vda", nbd.dest_xml(EXPORT, socket="/s"), {}, 0)
    assert kvmhost.mirror_export(dom, "vda") == EXPORT
    assert kvmhost.mirror_export(dom, "vdb") is None


RBD_XML = """<domain><name>i-2-7-VM</name><devices>
<disk type='file' device='disk'><source file='/mnt/pool-1/vol-1'/>
<target dev='vda'/></disk>
<disk type='network' device='disk'><driver name='qemu' type='raw'/>
<source protocol='rbd' name='cloudstack/vol-2'><host name='10.0.0.5'
port='6789'/></source><auth username='admin'><secret type='ceph'
uuid='6a1c5e0e-0000-4000-8000-000000000002'/></auth>
<target dev='vdb' bus='virtio'/></disk>
<disk type='network' device='disk'>
<source protocol='rbd' name='other/vol-3'/><target dev='vdc'/></disk>
<disk type='network' device='disk'>
<source protocol='nbd' name='cloudstack/vol-4'/><target dev='vdd'/></disk>
<disk type='network' device='cdrom'>
<source protocol='rbd' name='cloudstack/vol-5'/><target dev='hdc'/></disk>
</devices></domain>"""


def test_an_rbd_disk_is_found_by_its_whole_pool_and_image_name():
    """As CloudStack's KVM agent writes a volume on RBD primary storage:
    a network disk named <Ceph pool>/<image>."""
    dom = fakes.FakeDomain(xml=RBD_XML)
    assert kvmhost.rbd_disk(dom, "cloudstack", "vol-2") == "vdb"
    assert kvmhost.rbd_disk(dom, "other", "vol-3") == "vdc"
    # A file disk still by its file, never by an RBD disk's name.
    assert kvmhost.root_disk(dom, "pool-1", "vol-1") == "vda"
    with pytest.raises(exception.Invalid) as err:
        kvmhost.root_disk(dom, "cloudstack", "vol-2")
    assert "has 0 disks on .../cloudstack/vol-2" in str(err.value)
    for pool, image in (("cloudstack", "vol-3"),  # another pool's image
                        ("loudstack", "vol-2"),  # a tail is no match
                        ("cloudstack", "vol-4"),  # not rbd
                        ("cloudstack", "vol-5"),  # not a disk
                        ("pool-1", "vol-1")):  # a file
        with pytest.raises(exception.Invalid) as err:
            kvmhost.rbd_disk(dom, pool, image)
        assert str(err.value).endswith(
            "domain i-2-7-VM has 0 RBD disks %s/%s; expected exactly one"
            % (pool, image))


def test_the_stand_ins_rbd_disk_is_found_as_cloudstacks_would_be():
    """The e2e stand-in writes its RBD data disk as the KVM agent does
    (tools/testbed/cloudstack_kvm.py); the matcher finds that one."""
    disk = cloudstack_kvm.rbd_disk_xml(
        "volumes", "vol-9", "127.0.0.1", 6789, "cinder",
        "d4b9c7de-9d89-426f-b785-8d8b2c4eda71", "vdc", "serial-9")
    xml = "<domain><name>i-2-8-VM</name><devices>%s</devices></domain>" % (
        disk)
    dom = fakes.FakeDomain(name="i-2-8-VM", xml=xml)
    assert kvmhost.rbd_disk(dom, "volumes", "vol-9") == "vdc"
