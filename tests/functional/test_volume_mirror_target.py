"""A data disk's mirror target for real: a qemu-storage-daemon that opens
an RBD image on the minicloud's Ceph with QEMU's librbd (the cephx key
handed over as a QMP secret object) and exports it over NBD, written by
an NBD client as the source host's block copy writes it (data, zeros
with unmap allowed, all-zero data).  The whole warm migration runs in
tests/e2e/test_warm_data_disks.py."""

import json
import os
import subprocess
import uuid

import pytest

from cs2os_agent.agent import volume_target
from cs2os_agent.agent.mirror import volumemirror
from tools.testbed.minicloud import HINT
from tools.testbed.minicloud import STATE_DIR

MiB = 1024 * 1024
VOLUME = "0b7e6f4c-2d51-4c7e-9a3b-6a1f0e2d9c11"


@pytest.fixture
def ceph():
    """minicloud.json's "ceph" entry; a missing Ceph fails, never skips."""
    try:
        with open(os.path.join(STATE_DIR, "minicloud.json")) as f:
            info = json.load(f)["ceph"]
    except (OSError, ValueError, KeyError) as exc:
        pytest.fail("the minicloud's Ceph is not described in %s (%s); %s"
                    % (STATE_DIR, exc, HINT), pytrace=False)
    return info


def _rbd(ceph, *args):
    return subprocess.run(["rbd", "-c", ceph["conf"], "--id", ceph["user"],
                           *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def image(ceph):
    name = "cs2os-ft-volmirror-%s" % uuid.uuid4().hex[:8]
    _rbd(ceph, "create", "--size", "256", "%s/%s" % (ceph["pool"], name))
    yield name
    _rbd(ceph, "rm", "--no-progress", "%s/%s" % (ceph["pool"], name))


def _target(ceph, image):
    host, _, port = ceph["mon_host"].partition(":")
    key = volume_target.keyring_key(os.path.dirname(ceph["keyring"]),
                                    ceph["user"])
    target = volume_target.VolumeTarget(
        VOLUME, "rbd", "%s/%s" % (ceph["pool"], image), "raw",
        hosts=((host, port or "6789"),), user=ceph["user"], target_dev="vdb")
    return target, key


def _nbd_uri(desc):
    return "nbd+unix:///%s?socket=%s" % (desc["export"],
                                         desc["nbd"]["socket"])


def test_the_volume_is_written_through_the_export_and_stays_thin(
        ceph, image, tmp_path):
    target, key = _target(ceph, image)
    mirror = volumemirror.VolumeMirrorTarget(
        "m-ft", target, key, 48 * MiB, str(tmp_path / "run"))
    os.makedirs(tmp_path / "run", mode=0o700)
    desc = mirror.prepare()
    try:
        # The daemon's argv carries no key, and its file is gone once the
        # daemon opened the volume.
        with open("/proc/%d/cmdline" % desc["qsd_pid"], "rb") as f:
            assert key.encode() not in f.read()
        assert not os.path.exists(mirror.key_dir)
        info = json.loads(subprocess.run(
            ["qemu-img", "info", "--output=json", _nbd_uri(desc)],
            check=True, capture_output=True, text=True).stdout)
        # Exactly the source disk's size, not the volume's 256 MiB.
        assert info["virtual-size"] == 48 * MiB
        subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write -P 0x42 1M 1M",
             "-c", "write -z -u 8M 32M", "-c", "write -P 0 44M 4M",
             _nbd_uri(desc)], check=True, capture_output=True)
        assert mirror.status()["state"] == "exporting"
    except BaseException:
        mirror.abort()
        raise
    closed = mirror.finish()
    assert closed["target_path"] is None
    assert not os.path.exists(mirror.run_dir)
    uri = "rbd:%s/%s:conf=%s:id=%s" % (ceph["pool"], image, ceph["conf"],
                                       ceph["user"])
    out = subprocess.run(["qemu-io", "-r", "-f", "raw", "-c",
                          "read -P 0x42 1M 1M", "-c", "read -P 0 8M 40M",
                          uri], check=True, capture_output=True,
                         text=True).stdout
    assert "Pattern verification failed" not in out
    # Only the object the data went to: zeros were not written.
    du = json.loads(_rbd(ceph, "du", "--format", "json",
                         "%s/%s" % (ceph["pool"], image)))
    assert du["images"][0]["used_size"] <= 4 * MiB


def test_abort_stops_the_daemon_and_leaves_nothing(ceph, image, tmp_path):
    target, key = _target(ceph, image)
    os.makedirs(tmp_path / "run", mode=0o700)
    mirror = volumemirror.VolumeMirrorTarget(
        "m-ft2", target, key, 48 * MiB, str(tmp_path / "run"))
    desc = mirror.prepare()
    pid = desc["qsd_pid"]
    mirror.abort()
    assert mirror.qsd.proc.poll() is not None, "daemon %d still runs" % pid
    assert not os.path.exists(mirror.run_dir)
    assert mirror.status()["state"] == "aborted"
    # The image was closed, not left open by a killed daemon: no watcher
    # keeps Cinder from deleting the volume at once (the fixture's rm).
    status = json.loads(_rbd(ceph, "status", "--format", "json",
                             "%s/%s" % (ceph["pool"], image)))
    assert status["watchers"] == []
