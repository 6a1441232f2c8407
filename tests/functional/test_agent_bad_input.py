"""Bad input gets an error that names the problem and changes nothing.

Every case runs against the real agent over RabbitMQ; the exception type
arriving at the caller is the agent's own (it survived RPC), and the
instance directory is byte-for-byte as it was.
"""

import contextlib
import errno
import os
import stat
import threading
import uuid

import pytest

from cs2os_agent.common import exception
from tests.functional.checks import sync_expecting
from tools.testbed import images

MiB = images.MiB


def test_overlay_larger_than_instance_disk(agent, agent_api, ctxt,
                                           cloudstack_volume, nova_instance):
    vol = cloudstack_volume(volume_size=256 * MiB)
    inst = nova_instance(vol.template, 128 * MiB)
    msg = sync_expecting(agent, agent_api, ctxt, inst,
                         {"transport": "path", "path": vol.overlay},
                         exception.OverlayTooLarge)
    assert str(256 * MiB) in msg and str(128 * MiB) in msg
    assert "flavor" in msg


def test_not_qcow2(agent, agent_api, ctxt, instance):
    raw = os.path.join(instance.volume.pool_dir, "raw-%s" % uuid.uuid4())
    images.run("qemu-img", "create", "-q", "-f", "raw", raw, str(16 * MiB))
    msg = sync_expecting(agent, agent_api, ctxt, instance,
                         {"transport": "path", "path": raw},
                         exception.NotQcow2)
    assert raw in msg and "not a qcow2" in msg


def test_vmdk_is_named(agent, agent_api, ctxt, instance):
    vmdk = os.path.join(instance.volume.pool_dir, "vmdk-%s" % uuid.uuid4())
    images.run("qemu-img", "create", "-q", "-f", "vmdk", vmdk, str(16 * MiB))
    msg = sync_expecting(agent, agent_api, ctxt, instance,
                         {"transport": "path", "path": vmdk},
                         exception.NotQcow2)
    assert "vmdk" in msg


def test_corrupt_qcow2(agent, agent_api, ctxt, instance):
    bad = os.path.join(instance.volume.pool_dir, "corrupt-%s" % uuid.uuid4())
    images.make_corrupt_overlay(instance.volume, bad)
    msg = sync_expecting(agent, agent_api, ctxt, instance,
                         {"transport": "path", "path": "%s" % bad},
                         exception.ImageCorrupt)
    assert "corrupt" in msg


def test_corrupt_qcow2_that_would_be_grown(agent, agent_api, ctxt,
                                           cloudstack_volume, nova_instance):
    # The other path through the adoption: a copy smaller than the
    # instance disk is checked before resize touches its metadata (the
    # same-size one above is checked side by side with qemu-img info).
    vol = cloudstack_volume()
    inst = nova_instance(vol.template, 128 * MiB)
    bad = os.path.join(vol.pool_dir, "corrupt-%s" % uuid.uuid4())
    images.make_corrupt_overlay(vol, bad)
    msg = sync_expecting(agent, agent_api, ctxt, inst,
                         {"transport": "path", "path": bad},
                         exception.ImageCorrupt)
    assert "corrupt" in msg


def test_qcow2_with_external_data_file(agent, agent_api, ctxt, instance):
    # CVE-2024-32498: a data-file can point qemu at any host file.
    evil = os.path.join(instance.volume.pool_dir, "evil-%s" % uuid.uuid4())
    images.run("qemu-img", "create", "-q", "-f", "qcow2", "-o",
               "data_file=/etc/hostname", evil, str(16 * MiB))
    msg = sync_expecting(agent, agent_api, ctxt, instance,
                         {"transport": "path", "path": evil},
                         exception.UnsafeImage)
    assert "data_file" in msg


def test_unknown_instance(agent, agent_api, ctxt, instance):
    missing = str(uuid.uuid4())
    with pytest.raises(exception.InstanceNotFound) as err:
        agent_api.sync_overlay(ctxt, agent.host, "mig-x", missing,
                               {"transport": "path",
                                "path": instance.volume.overlay})
    assert missing in str(err.value) and agent.host in str(err.value)
    with pytest.raises(exception.InstanceNotFound):
        agent_api.swap_disk(ctxt, agent.host, "mig-x", missing)


def test_instance_uuid_that_is_not_a_uuid(agent, agent_api, ctxt):
    with pytest.raises(exception.Invalid) as err:
        agent_api.probe_instance(ctxt, agent.host, "../../etc")
    assert "not a UUID" in str(err.value)


def test_source_outside_allowed_roots(agent, agent_api, ctxt, instance,
                                      workdir):
    outside = os.path.join(workdir, "outside-%s.qcow2" % uuid.uuid4().hex)
    images.run("qemu-img", "create", "-q", "-f", "qcow2", outside, "1M")
    msg = sync_expecting(agent, agent_api, ctxt, instance,
                         {"transport": "path", "path": outside},
                         exception.SourceNotAllowed)
    assert outside in msg and "allowed_source_roots" in msg


def test_symlink_escaping_the_allowed_root(agent, agent_api, ctxt, instance,
                                          workdir):
    outside = os.path.join(workdir, "secret-%s.qcow2" % uuid.uuid4().hex)
    images.run("qemu-img", "create", "-q", "-f", "qcow2", outside, "1M")
    link = os.path.join(instance.volume.pool_dir, "link-%s" % uuid.uuid4())
    os.symlink(outside, link)
    sync_expecting(agent, agent_api, ctxt, instance,
                   {"transport": "path", "path": link},
                   exception.SourceNotAllowed)
    dotdot = os.path.join(instance.volume.pool_dir, "..", "..", "..",
                          os.path.basename(outside))
    sync_expecting(agent, agent_api, ctxt, instance,
                   {"transport": "path", "path": dotdot},
                   exception.SourceNotAllowed)


def _sync_within(agent, agent_api, ctxt, inst, source, exc_type,
                 seconds=60):
    """sync_expecting, failing (not hanging) if the agent blocks."""
    outcome = {}

    def call():
        try:
            outcome["msg"] = sync_expecting(agent, agent_api, ctxt, inst,
                                            source, exc_type)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(seconds)
    assert not caller.is_alive(), "the agent blocked on %s" % source
    if "error" in outcome:
        raise outcome["error"]
    return outcome["msg"]


@pytest.fixture
def fifo(instance):
    path = os.path.join(instance.volume.pool_dir, "fifo-%s" % uuid.uuid4())
    os.mkfifo(path)
    yield path
    # An agent a regression left blocked in open() is released by a writer.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    os.unlink(path)


def test_fifo_source_refused_at_once(agent, agent_api, ctxt, instance, fifo):
    msg = _sync_within(agent, agent_api, ctxt, instance,
                       {"transport": "path", "path": fifo},
                       exception.SourceNotRegularFile)
    assert fifo in msg and "FIFO" in msg
    # The agent was never stuck: it answers, and holds no reader on it.
    assert agent_api.get_agent_info(ctxt, agent.host)["host"] == agent.host
    with pytest.raises(OSError) as err:
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    assert err.value.errno == errno.ENXIO  # nobody has it open to read


@pytest.mark.parametrize("kind, major, minor, words", [
    (stat.S_IFCHR, 1, 5, "character device"),  # a /dev/zero: never ends
    (stat.S_IFBLK, 7, 0, "block device"),  # a /dev/loop0
])
def test_device_node_source_refused(agent, agent_api, ctxt, instance, kind,
                                    major, minor, words):
    node = os.path.join(instance.volume.pool_dir, "dev-%s" % uuid.uuid4())
    os.mknod(node, kind | 0o600, os.makedev(major, minor))
    try:
        msg = _sync_within(agent, agent_api, ctxt, instance,
                           {"transport": "path", "path": node},
                           exception.SourceNotRegularFile)
    finally:
        os.unlink(node)
    assert node in msg and words in msg


def test_symlinks_refused(agent, agent_api, ctxt, instance):
    pool = instance.volume.pool_dir
    to_zero = os.path.join(pool, "zero-%s" % uuid.uuid4())
    os.symlink("/dev/zero", to_zero)
    # Even to the real overlay, inside the roots: never followed.
    to_overlay = os.path.join(pool, "link-%s" % uuid.uuid4())
    os.symlink(instance.volume.overlay, to_overlay)
    try:
        msg = _sync_within(agent, agent_api, ctxt, instance,
                           {"transport": "path", "path": to_zero},
                           exception.SourceNotAllowed)
        assert to_zero in msg and "allowed_source_roots" in msg
        msg = _sync_within(agent, agent_api, ctxt, instance,
                           {"transport": "path", "path": to_overlay},
                           exception.SourceNotRegularFile)
        assert to_overlay in msg and "symbolic link" in msg
    finally:
        os.unlink(to_zero)
        os.unlink(to_overlay)


def test_missing_source_file(agent, agent_api, ctxt, instance):
    gone = os.path.join(instance.volume.pool_dir, str(uuid.uuid4()))
    msg = sync_expecting(agent, agent_api, ctxt, instance,
                         {"transport": "path", "path": gone},
                         exception.SourceNotFound)
    assert gone in msg


@pytest.mark.parametrize("source, words", [
    ({"transport": "carrier-pigeon", "path": "/x"}, "unknown transport"),
    ({"transport": "path"}, "missing path"),
    ({"transport": "path", "path": "/x", "pth": 1}, "unknown pth"),
    ({"transport": "path", "path": "relative/file"}, "must be absolute"),
    ("/mnt/pool/volume", "must be a dict"),
])
def test_malformed_source(agent, agent_api, ctxt, instance, source, words):
    msg = sync_expecting(agent, agent_api, ctxt, instance, source,
                         exception.InvalidSource)
    assert words in msg


def test_swap_without_staged_overlay(agent, agent_api, ctxt, instance):
    before = images.dir_state(instance.instance_dir)
    with pytest.raises(exception.NothingStaged):
        agent_api.swap_disk(ctxt, agent.host, "mig-none", instance.uuid)
    assert images.dir_state(instance.instance_dir) == before


def test_restore_on_a_running_domain_is_refused(agent, agent_api, ctxt,
                                                instance):
    instance.domain.create()
    with pytest.raises(exception.DomainNotShutOff):
        agent_api.restore_disk(ctxt, agent.host, "mig-r", instance.uuid)
