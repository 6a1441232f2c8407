"""A data disk's mirror target (agent/mirror/volumemirror.py): the graph
its qemu-storage-daemon is told to build for each kind of volume, the
export's name, and what is refused before anything starts.  The daemon
itself runs in tests/e2e/test_warm_data_disks.py."""

import pytest

from cs2os_agent.agent import volume_target
from cs2os_agent.agent.mirror import qsdgraph
from cs2os_agent.agent.mirror import volumemirror
from cs2os_agent.common import exception
from cs2os_agent.common import nbd

VOLUME = "0b7e6f4c-2d51-4c7e-9a3b-6a1f0e2d9c11"
KEY = "QVFCa2V5LW5vdC1yZWFsLWJ1dC1iYXNlNjQ9PQ=="


def rbd_target(user="cinder", fmt="raw"):
    return volume_target.VolumeTarget(
        VOLUME, "rbd", "volumes/volume-%s" % VOLUME, fmt,
        hosts=(("127.0.0.1", "6789"),), user=user,
        secret_uuid="5c2b7e3a-0000-4000-8000-000000000001", target_dev="vdb")


def test_an_rbd_volume_is_opened_by_librbd_with_the_key_as_a_qmp_secret():
    commands = volumemirror.graph_commands(
        rbd_target(), KEY, 48 * 1024 * 1024, "/run/x/nbd.sock", "cs2os-e",
        "/run/x.key/key")
    names = [c for c, _a in commands]
    assert names == ["object-add", "blockdev-add", "blockdev-add",
                     "nbd-server-start", "block-export-add"]
    secret = commands[0][1]
    # By file: qemu.qmp logs the commands it sends (DEBUG).
    assert secret == {"qom-type": "secret", "id": volumemirror.SECRET_ID,
                      "file": "/run/x.key/key", "format": "base64"}
    node = commands[1][1]
    assert node == {
        "driver": "rbd", "pool": "volumes", "image": "volume-%s" % VOLUME,
        "server": [{"host": "127.0.0.1", "port": "6789"}], "user": "cinder",
        "key-secret": volumemirror.SECRET_ID,
        "auth-client-required": ["cephx"], "node-name": volumemirror.V_FILE,
        # Zeroes the mirror writes with unmap allowed become discards: a
        # thin volume stays thin.
        "discard": "unmap"}
    # Exactly the source disk's size: QEMU's mirror refuses another.
    assert commands[2][1] == {
        "driver": "raw", "node-name": volumemirror.V_FMT,
        "file": volumemirror.V_FILE, "size": 48 * 1024 * 1024,
        "discard": "unmap", "detect-zeroes": "unmap"}
    assert commands[4][1] == {"type": "nbd", "id": qsdgraph.EXPORT_ID,
                              "node-name": volumemirror.V_FMT,
                              "name": "cs2os-e", "writable": True}
    # The key is in no command.
    assert not any(KEY in repr(a) for _c, a in commands)


def test_an_rbd_volume_without_cephx_needs_no_secret():
    commands = volumemirror.graph_commands(rbd_target(user=None), None, 1,
                                           "/s", "e")
    assert commands[0][0] == "blockdev-add"
    assert "key-secret" not in commands[0][1]


def test_a_cephx_user_without_a_key_is_refused():
    with pytest.raises(exception.VolumeNotWritable) as err:
        volumemirror.graph_commands(rbd_target(), None, 1, "/s", "e")
    assert "no key for cephx user cinder" in str(err.value)


def test_block_and_file_volumes():
    block = volume_target.VolumeTarget(VOLUME, "block", "/dev/sdx", "raw")
    commands = volumemirror.graph_commands(block, None, 1, "/s", "e")
    assert commands[0][1]["driver"] == "host_device"
    assert commands[0][1]["filename"] == "/dev/sdx"
    assert commands[0][1]["cache"] == {"direct": True}
    plain = volume_target.VolumeTarget(VOLUME, "file", "/nfs/v", "raw")
    commands = volumemirror.graph_commands(plain, None, 1, "/s", "e")
    assert commands[0][1]["driver"] == "file"


def test_a_qcow2_volume_is_refused_for_a_warm_migration():
    with pytest.raises(exception.VolumeNotWritable) as err:
        volumemirror.graph_commands(rbd_target(fmt="qcow2"), KEY, 1, "/s",
                                    "e")
    assert "raw volumes only" in str(err.value)
    assert "use mode cold" in str(err.value)


def test_each_volume_has_its_own_export_and_run_dir():
    a = volumemirror.export_name("m1", VOLUME)
    assert a == nbd.export_name("m1/%s" % VOLUME)
    assert a != nbd.export_name("m1")
    assert a != volumemirror.export_name("m1", "other")
    assert volumemirror.run_dir_for("/run/cs2os", "m1", VOLUME) != \
        volumemirror.run_dir_for("/run/cs2os", "m1", "other")


def test_the_target_holds_no_t_file(tmp_path):
    target = volumemirror.VolumeMirrorTarget(
        "m1", rbd_target(), KEY, 4096, str(tmp_path))
    assert target.target_path is None and target.write_behind is None
    assert target.export == volumemirror.export_name("m1", VOLUME)
    assert target.qsd.graph[0][0] == "object-add"
    assert target.qsd.close_order == volumemirror.CLOSE_ORDER
    # Abandoning an earlier agent's target removes no T (there is none).
    target.abort()
    assert target.state == "aborted"
