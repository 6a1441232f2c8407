"""A data disk's chain checked, copied, linked and written into its
volume (agent/volumes.py), with fake sources holding qcow2 headers and
qemu-img patched at ``_run``: the argv it is given, and what the key file
holds while it runs.  The real thing is tests/e2e/test_data_disks.py.
"""

import base64
import json
import os
import stat

import pytest
from oslo_concurrency import processutils

from cs2os_agent import qcow2
from cs2os_agent import qemu_img
from cs2os_agent.agent import volume_target
from cs2os_agent.agent import volumes
from cs2os_agent.common import exception
from tests.unit.agent.test_overlay_layers import FakeSource
from tests.unit.qemu_img_helpers import run_fixture  # noqa: F401 - fixture
from tests.unit.test_qcow2 import qcow2_header

MiB = 1024 * 1024
GiB = 1024 ** 3
VOLUME = "0d7a3e2c-4b1f-4a55-8b1e-6f2f8f9d3c01"
SECRET = "457eb676-33da-42ec-9a8c-9293d545c337"
RAW_KEY = b"\x01\x02cephx-raw-key\xfe\xff"
KEY = base64.b64encode(RAW_KEY).decode("ascii")

RBD = volume_target.VolumeTarget(
    VOLUME, "rbd", "volumes/volume-%s" % VOLUME, "raw",
    (("192.0.2.10", "6789"),), "cinder", SECRET, "vdb")
BLOCK = volume_target.VolumeTarget(VOLUME, "block", "/dev/sdb", "raw",
                                   target_dev="vdb")


def chain(*backings):
    """Sources top-down; ``backings[n]``: the file n names, or None."""
    return [FakeSource("f%d" % n, backing) for n, backing in
            enumerate(backings)]


# -- inspect_chain ----------------------------------------------------------


def test_a_chain_down_to_a_standalone_bottom_is_accepted():
    headers = volumes.inspect_chain(chain("f1", "f2", None))
    assert [h.has_backing for h in headers] == [True, True, False]
    assert [h.backing_file for h in headers[:2]] == ["/mnt/pool/f1",
                                                     "/mnt/pool/f2"]
    assert headers[0].virtual_size == 64 * MiB


def test_a_standalone_data_disk_is_a_chain_of_one():
    headers = volumes.inspect_chain(chain(None))
    assert headers == [qcow2.Header(virtual_size=64 * MiB,
                                    has_backing=False)]


def test_a_bottom_with_a_backing_file_is_refused():
    with pytest.raises(exception.InvalidSource) as info:
        volumes.inspect_chain(chain("f1", "template"))
    message = str(info.value)
    assert "/mnt/pool/f1" in message
    assert ("the bottom of the chain has a backing file (/mnt/pool/template)"
            ": its template is missing from the request") in message


def test_a_file_above_the_bottom_without_backing_is_refused():
    with pytest.raises(exception.InvalidSource) as info:
        volumes.inspect_chain(chain("f1", None, None))
    message = str(info.value)
    assert "/mnt/pool/f1" in message
    assert ("it has no backing file, but 1 more file(s) follow it in the "
            "chain") in message


@pytest.mark.parametrize("count", [0, volumes.MAX_CHAIN + 1])
def test_an_empty_or_too_long_chain_is_refused(count):
    sources = chain(*(["x"] * (count - 1) + [None])) if count else []
    with pytest.raises(exception.InvalidSource) as info:
        volumes.inspect_chain(sources)
    assert "a data disk's chain has 1 to 18 files, not %d" % count in str(
        info.value)
    assert all(s.copied_by is None for s in sources)


def test_the_longest_chain_is_accepted():
    count = volumes.MAX_CHAIN
    headers = volumes.inspect_chain(chain(*(["x"] * (count - 1) + [None])))
    assert len(headers) == count


def test_a_file_that_is_not_qcow2_is_refused():
    raw = FakeSource("raw")
    raw.data = b"\0" * 65536
    with pytest.raises(exception.NotQcow2):
        volumes.inspect_chain([raw])


# -- copy_chain, link_chain --------------------------------------------------


class Monitor:
    def __init__(self, total):
        self.total, self.advanced, self.finished = total, 0, False

    def advance(self, n):
        self.advanced += n

    def check_cancelled(self):
        pass

    def finish(self):
        self.finished = True


def test_copy_chain_copies_every_file_into_the_instance_dir(tmp_path):
    sources = chain("f1", None)
    headers = volumes.inspect_chain(sources)
    monitors = []
    paths, copied = volumes.copy_chain(
        sources, headers, str(tmp_path), VOLUME,
        lambda total: monitors.append(Monitor(total)) or monitors[-1],
        MiB)
    assert paths == [str(tmp_path / ("disk.cs2os-volume-%s-%d" % (VOLUME,
                                                                  n)))
                     for n in (0, 1)]
    for path, src in zip(paths, sources, strict=True):
        with open(path, "rb") as f:
            assert f.read() == src.data
    assert copied == sum(len(s.data) for s in sources)
    assert monitors[0].total == copied and monitors[0].finished


def test_a_copy_whose_header_changed_is_discarded(tmp_path):
    sources = chain(None)
    headers = volumes.inspect_chain(sources)
    sources[0].data = qcow2_header(size=128 * MiB)  # grew meanwhile
    with pytest.raises(exception.TransferFailed, match="header changed"):
        volumes.copy_chain(sources, headers, str(tmp_path), VOLUME,
                           Monitor, MiB)
    assert os.listdir(tmp_path) == []


def test_link_chain_rebases_each_copy_onto_the_next_then_checks(run):
    run.return_value = "{}"
    volumes.link_chain(["/i/c0", "/i/c1", "/i/c2"])
    argvs = [call.args[0] for call in run.call_args_list]
    assert argvs == [
        ["qemu-img", "rebase", "-f", "qcow2", "-u", "-b", "/i/c2", "-F",
         "qcow2", "/i/c1"],
        ["qemu-img", "rebase", "-f", "qcow2", "-u", "-b", "/i/c1", "-F",
         "qcow2", "/i/c0"],
        ["qemu-img", "check", "--output=json", "-f", "qcow2", "/i/c0"],
        ["qemu-img", "check", "--output=json", "-f", "qcow2", "/i/c1"],
        ["qemu-img", "check", "--output=json", "-f", "qcow2", "/i/c2"],
    ]


# -- write -------------------------------------------------------------------


class QemuImg:
    """``_run``: qemu-img info says the volume's size; every argv is kept,
    and while convert and compare run, the key file named by --object."""

    def __init__(self, volume_size):
        self.volume_size = volume_size
        self.argvs, self.keyfiles = [], []

    def __call__(self, args, prlimit=None):
        self.argvs.append(list(args))
        for arg in args:
            if arg.startswith("secret,"):
                path = dict(p.split("=", 1) for p in arg.split(",")[1:]
                            if "=" in p)["file"]
                with open(path) as f:
                    self.keyfiles.append((args[1], path, stat.S_IMODE(
                        os.stat(path).st_mode), f.read()))
        if args[1] == "info":
            return json.dumps({"virtual-size": self.volume_size})
        return ""

    def commands(self):
        return [argv[1] for argv in self.argvs]


@pytest.fixture
def qemu(monkeypatch):
    fake = QemuImg(2 * GiB)
    monkeypatch.setattr(qemu_img, "_run", fake)
    return fake


def test_write_into_rbd_passes_the_key_as_a_0600_file(qemu):
    length, write_s, verify_s = volumes.write("/i/c0", "qcow2", GiB, RBD, KEY)
    assert length == 2 * GiB and write_s >= 0 and verify_s >= 0
    assert qemu.commands() == ["info", "convert", "compare"]
    name, needs_key = volume_target.qemu_target(RBD)
    assert needs_key
    keyfile = qemu.keyfiles[0][1]
    obj = ["--object", "secret,id=%s,file=%s,format=base64"
           % (volume_target.SECRET_ID, keyfile)]
    info, convert, compare = qemu.argvs
    assert info == ["qemu-img", "info", *obj, "--output=json", "-f", "raw",
                    name]
    assert convert == ["qemu-img", "convert", *obj, "-n", "-f", "qcow2",
                       "-O", "raw", "--target-is-zero", "-W", "/i/c0", name]
    assert compare == ["qemu-img", "compare", *obj, "-f", "qcow2", "-F",
                       "raw", "/i/c0", name]
    # The key was there, 0600, whenever qemu-img ran; it never was an
    # argument, and it is gone now.
    assert [k[0] for k in qemu.keyfiles] == ["info", "convert", "compare"]
    assert {k[1:] for k in qemu.keyfiles} == {(keyfile, 0o600, KEY)}
    assert not any(KEY in arg for argv in qemu.argvs for arg in argv)
    assert not os.path.exists(keyfile)
    assert not os.path.exists(os.path.dirname(keyfile))


def test_write_into_a_block_device_needs_no_key_nor_target_is_zero(qemu):
    volumes.write("/i/c0", "qcow2", GiB, BLOCK, None)
    info, convert, compare = qemu.argvs
    assert info == ["qemu-img", "info", "--output=json", "-f", "raw",
                    "/dev/sdb"]
    assert convert == ["qemu-img", "convert", "-n", "-f", "qcow2", "-O",
                       "raw", "-W", "/i/c0", "/dev/sdb"]
    assert compare == ["qemu-img", "compare", "-f", "qcow2", "-F", "raw",
                       "/i/c0", "/dev/sdb"]
    assert qemu.keyfiles == []


def test_write_into_a_qcow2_file_opens_it_as_qcow2(qemu):
    target = volume_target.VolumeTarget(VOLUME, "file", "/nfs/v", "qcow2")
    volumes.write("/i/c0", "qcow2", GiB, target, None)
    assert qemu.argvs[1] == ["qemu-img", "convert", "-n", "-f", "qcow2",
                             "-O", "qcow2", "/i/c0", "/nfs/v"]
    # A file: written in order (out of order would fragment it).
    assert "--target-is-zero" not in qemu.argvs[1]
    assert "-W" not in qemu.argvs[1]


def test_a_volume_shorter_than_the_disk_is_refused_before_convert(qemu):
    qemu.volume_size = GiB - 512
    with pytest.raises(exception.VolumeNotWritable) as info:
        volumes.write("/i/c0", "qcow2", GiB, RBD, KEY)
    assert str(info.value).endswith(
        "it is %d bytes, the data disk %d" % (GiB - 512, GiB))
    assert qemu.commands() == ["info"]


def test_a_volume_exactly_the_disks_size_is_written(qemu):
    qemu.volume_size = GiB
    assert volumes.write("/i/c0", "qcow2", GiB, BLOCK, None)[0] == GiB
    assert qemu.commands() == ["info", "convert", "compare"]


def test_an_rbd_user_without_a_key_is_refused_before_qemu_img(qemu):
    with pytest.raises(exception.VolumeNotWritable,
                       match="no key for cephx user cinder"):
        volumes.write("/i/c0", "qcow2", GiB, RBD, None)
    assert qemu.argvs == []


def test_a_volume_that_differs_after_convert_fails_the_write(monkeypatch):
    ran = []

    def fake(args, prlimit=None):
        ran.append(args[1])
        if args[1] == "info":
            return json.dumps({"virtual-size": GiB})
        if args[1] == "compare":
            raise processutils.ProcessExecutionError(
                exit_code=1, stdout="Content mismatch at offset 0!\n")
        return ""

    monkeypatch.setattr(qemu_img, "_run", fake)
    with pytest.raises(exception.ImagesDiffer, match="Content mismatch"):
        volumes.write("/i/c0", "qcow2", GiB, BLOCK, None)
    assert ran == ["info", "convert", "compare"]


# -- key_for -----------------------------------------------------------------


class Libvirt:
    def __init__(self, value):
        self.value, self.asked = value, []

    def secret_value(self, uuid):
        self.asked.append(uuid)
        return self.value


def keyring(tmp_path, user="cinder", key="AQDkeyringkey=="):
    (tmp_path / ("ceph.client.%s.keyring" % user)).write_text(
        "[client.%s]\n\tkey = %s\n" % (user, key))
    return str(tmp_path)


def test_key_for_reads_the_libvirt_secret_base64_encoded(tmp_path):
    libvirt = Libvirt(RAW_KEY)
    assert volumes.key_for(RBD, libvirt, keyring(tmp_path)) == KEY
    assert libvirt.asked == [SECRET]


def test_key_for_a_private_secret_reads_the_keyring(tmp_path):
    libvirt = Libvirt(None)
    assert volumes.key_for(RBD, libvirt, keyring(tmp_path)) == (
        "AQDkeyringkey==")
    assert libvirt.asked == [SECRET]


def test_key_for_without_a_secret_uuid_reads_the_keyring(tmp_path):
    target = volume_target.VolumeTarget(VOLUME, "rbd", "p/i", "raw",
                                        user="cinder")
    libvirt = Libvirt(RAW_KEY)
    assert volumes.key_for(target, libvirt, keyring(tmp_path)) == (
        "AQDkeyringkey==")
    assert libvirt.asked == []


@pytest.mark.parametrize("has_dir", [False, True])
def test_key_for_with_neither_is_refused_naming_the_option(tmp_path,
                                                           has_dir):
    keyring(tmp_path, user="admin")
    keyring_dir = str(tmp_path) if has_dir else None
    with pytest.raises(exception.VolumeNotWritable) as info:
        volumes.key_for(RBD, Libvirt(None), keyring_dir)
    message = str(info.value)
    assert ("libvirt keeps secret %s of cephx user cinder private and no "
            "ceph.client.cinder.keyring is in [agent] ceph_keyring_dir (%s)"
            % (SECRET, keyring_dir or "not set")) in message


def test_key_for_a_target_needing_no_key_is_none():
    libvirt = Libvirt(RAW_KEY)
    assert volumes.key_for(BLOCK, libvirt, None) is None
    no_auth = volume_target.VolumeTarget(VOLUME, "rbd", "p/i", "raw")
    assert volumes.key_for(no_auth, libvirt, None) is None
    assert libvirt.asked == []


# -- read_meta, remove_copies -----------------------------------------------

FINGERPRINT = [{"transport": "path", "path": "/mnt/pool/f0", "size": 7,
                "mtime_ns": 1, "inode": 7}]


def test_read_meta_answers_only_for_the_same_migration_and_chain(tmp_path):
    meta = {"migration_id": "m1", "source": FINGERPRINT, "verified": True}
    (tmp_path / ("disk.cs2os-volume-%s.json" % VOLUME)).write_text(
        json.dumps(meta))
    assert volumes.read_meta(str(tmp_path), VOLUME, "m1",
                             FINGERPRINT) == meta
    assert volumes.read_meta(str(tmp_path), VOLUME, "m2",
                             FINGERPRINT) is None
    changed = [dict(FINGERPRINT[0], size=8)]
    assert volumes.read_meta(str(tmp_path), VOLUME, "m1", changed) is None
    assert volumes.read_meta(str(tmp_path), "other", "m1",
                             FINGERPRINT) is None


def test_read_meta_of_a_damaged_sidecar_is_none(tmp_path):
    (tmp_path / ("disk.cs2os-volume-%s.json" % VOLUME)).write_text("{")
    assert volumes.read_meta(str(tmp_path), VOLUME, "m1",
                             FINGERPRINT) is None


def test_remove_copies_removes_copies_and_checkpoints_only(tmp_path):
    names = ["disk.cs2os-volume-%s-%d" % (VOLUME, n) for n in (0, 1, 17)]
    names += [n + ".part.json" for n in names]
    keep = ["disk", "disk.cs2os-volume-%s.json" % VOLUME,
            "disk.cs2os-volume-other-0"]
    for name in names + keep:
        (tmp_path / name).write_text("x")
    volumes.remove_copies(str(tmp_path), VOLUME)
    assert sorted(os.listdir(tmp_path)) == sorted(keep)
