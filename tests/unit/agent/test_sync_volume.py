"""AgentManager.sync_volume: input refused before libvirt is asked; a
data disk written into the volume the domain XML names, its copies gone
and its result remembered, so a repeat answers without copying.

libvirt and the transport are fakes, qemu-img is patched at ``_run``.
The real thing is tests/e2e/test_data_disks.py.
"""

import base64
import contextlib
import json
import os
import types

import pytest

from cs2os_agent import qemu_img
from cs2os_agent.agent import domain
from cs2os_agent.agent import manager
from cs2os_agent.common import exception
from tests.unit.agent.test_overlay_layers import FakeSource

INSTANCE = "5f0c1c55-7d0f-4d3e-9a36-1b7c0c7a2b11"
VOLUME = "0d7a3e2c-4b1f-4a55-8b1e-6f2f8f9d3c01"
SECRET = "457eb676-33da-42ec-9a8c-9293d545c337"
RAW_KEY = b"raw-cephx-key-bytes"
GiB = 1024 ** 3

XML = """<domain type='kvm'><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
    <source file='%(dir)s/disk'/><target dev='vda'/></disk>
  <disk type='network' device='disk'><driver name='qemu' type='raw'/>
    <auth username='cinder'><secret type='ceph' uuid='%(secret)s'/></auth>
    <source protocol='rbd' name='volumes/volume-%(volume)s'>
      <host name='192.0.2.10' port='6789'/></source>
    <target dev='vdb' bus='virtio'/><serial>%(volume)s</serial></disk>
</devices></domain>"""


class Libvirt:
    """Every call kept; the instance shut off, its volume attached."""

    def __init__(self, instance_dir, state=domain.SHUTOFF):
        self.instance_dir, self.state = instance_dir, state
        self.calls = []

    def domain_info(self, uuid):
        self.calls.append(("domain_info", uuid))
        return domain.DomainInfo("instance-1", self.state,
                                 os.path.join(self.instance_dir, "disk"),
                                 "qcow2")

    def domain_xml(self, uuid):
        self.calls.append(("domain_xml", uuid))
        return self.state, XML % {"dir": self.instance_dir,
                                  "secret": SECRET, "volume": VOLUME}

    def secret_value(self, uuid):
        self.calls.append(("secret_value", uuid))
        return RAW_KEY


def conf(instances_path):
    return types.SimpleNamespace(
        host="compute-1",
        agent=types.SimpleNamespace(instances_path=instances_path,
                                    ceph_keyring_dir=None,
                                    progress_interval=5),
        transfer=types.SimpleNamespace(checkpoint_mib=1,
                                       max_bandwidth_mbps=0))


@pytest.fixture
def world(tmp_path, monkeypatch):
    instance_dir = tmp_path / INSTANCE
    instance_dir.mkdir()
    (instance_dir / "disk").write_bytes(b"")
    libvirt = Libvirt(str(instance_dir))
    agent = manager.AgentManager(conf(str(tmp_path)), libvirt_host=libvirt,
                                 progress_sink=lambda *a: None)
    files = {"/mnt/pool/d1": FakeSource("d1", "t"),
             "/mnt/pool/t": FakeSource("t")}
    opened = []

    def get_source(source, _conf):
        opened.append(source["path"])
        return contextlib.nullcontext(files[source["path"]])

    monkeypatch.setattr(manager.transfer, "get_source", get_source)
    ran = []

    def run(args, prlimit=None):
        ran.append(list(args))
        if args[1] == "info":
            return json.dumps({"virtual-size": GiB})
        if args[1] == "check":
            return "{}"
        return ""

    monkeypatch.setattr(qemu_img, "_run", run)
    return types.SimpleNamespace(agent=agent, libvirt=libvirt, ran=ran,
                                 opened=opened, dir=instance_dir)


CHAIN = [{"transport": "path", "path": "/mnt/pool/d1"},
         {"transport": "path", "path": "/mnt/pool/t"}]


def sync(world, volume_id=VOLUME, chain=CHAIN, instance=INSTANCE):
    return world.agent.sync_volume(None, "m1", instance, volume_id, chain)


@pytest.mark.parametrize("chain", [None, [], (), {}, "/mnt/pool/d1",
                                   {"transport": "path"}])
def test_a_chain_that_is_no_non_empty_list_is_refused(world, chain):
    with pytest.raises(exception.InvalidSource) as info:
        sync(world, chain=chain)
    assert ("a data disk's chain must be a non-empty list of sources"
            in str(info.value))
    assert world.libvirt.calls == [] and world.opened == []
    assert world.agent._busy == {}


@pytest.mark.parametrize("volume_id", [None, "", "vol-1", "../../disk",
                                       VOLUME + "/../x"])
def test_a_volume_id_that_is_no_uuid_is_refused(world, volume_id):
    with pytest.raises(exception.Invalid) as info:
        sync(world, volume_id=volume_id)
    assert "volume_id %r is not a UUID" % (volume_id,) in str(info.value)
    assert world.libvirt.calls == [] and world.opened == []
    assert world.ran == []


def test_an_instance_that_is_not_shut_off_is_refused(world):
    world.libvirt.state = "running"
    with pytest.raises(exception.DomainNotShutOff):
        sync(world)
    assert world.libvirt.calls == [("domain_info", INSTANCE)]
    assert world.opened == [] and world.ran == []


def test_a_volume_not_attached_is_refused_before_a_source_opens(world):
    other = "9b1d2e3f-0000-4000-8000-00000000000a"
    with pytest.raises(exception.VolumeNotAttached):
        sync(world, volume_id=other)
    assert world.opened == [] and world.ran == []


def test_the_disk_is_written_verified_remembered_and_not_redone(world):
    result = sync(world)
    assert result["reused"] is False and result["verified"] is True
    assert (result["volume_id"], result["target_dev"], result["files"],
            result["volume_size"]) == (VOLUME, "vdb", 2, GiB)
    assert result["bytes_copied"] == sum(
        len(s.data) for s in (FakeSource("d1", "t"), FakeSource("t")))
    commands = [argv[1] for argv in world.ran]
    assert commands == ["rebase", "check", "check", "info", "convert",
                        "compare"]
    # The key came from libvirt's secret, in a file qemu-img was named.
    assert ("secret_value", SECRET) in world.libvirt.calls
    convert = world.ran[4]
    assert "--target-is-zero" in convert
    assert base64.b64encode(RAW_KEY).decode() not in " ".join(convert)
    # The copies are gone; the sidecar remains.
    assert sorted(os.listdir(world.dir)) == [
        "disk", "disk.cs2os-volume-%s.json" % VOLUME]
    # Again: the sidecar answers; nothing is copied or written.
    world.ran.clear()
    again = sync(world)
    assert again == dict(result, reused=True)
    assert world.ran == []
