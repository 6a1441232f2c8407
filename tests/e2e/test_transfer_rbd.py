"""The rbd transport against the minicloud's real Ceph.

Only Ceph is needed (the ``minicloud_volumes`` fixture fails when it is
missing): no message bus, conductor or agent.  Each module run makes a
"template" image with data at known offsets, snapshots and protects it and
clones the snapshot the way CloudStack creates a volume, writes into the
clone, and keeps a local raw file with the same guest view to compare
against.  Only those images (named ``cs2os-rbdsrc-<run>-...``) are made
and deleted; Cinder's images in the same pool are never touched.
"""

import os
import socket
import subprocess
import threading
import time
import types
import uuid

import pytest

from cs2os_agent import transfer
from cs2os_agent.common import exception
from cs2os_agent.transfer import monitor as transfer_monitor
from cs2os_agent.transfer import partial as partial_file

MiB = 1024 * 1024
SIZE = 64 * MiB
# (offset, length, byte) written into the template, then into the clone.
TEMPLATE_DATA = [(0, 1 * MiB, 0x11), (20 * MiB, 4096, 0x22),
                 (30 * MiB, 3 * MiB, 0x33)]
CLONE_DATA = [(512 * 1024, 8192, 0x44), (40 * MiB, 64 * 1024, 0x55),
              (63 * MiB, 1 * MiB, 0x66)]


class Ceph:
    """The minicloud's Ceph, through the rbd and qemu-io commands."""

    def __init__(self, info):
        self.conf, self.pool = info["conf"], info["pool"]
        self.user, self.keyring = info["user"], info["keyring"]
        self.mon_host = info["mon_host"]

    def rbd(self, *args):
        # The key stays in the keyring file: only its path is passed.
        return subprocess.run(
            ["rbd", "-c", self.conf, "--id", self.user, "--keyring",
             self.keyring, *args], check=True, capture_output=True,
            text=True, timeout=120).stdout

    def qemu_spec(self, image):
        return "rbd:%s/%s:conf=%s:id=%s:keyring=%s" % (
            self.pool, image, self.conf, self.user, self.keyring)

    def write(self, image, data):
        commands = []
        for offset, length, byte in data:
            commands += ["-c", "write -P %d %d %d" % (byte, offset, length)]
        subprocess.run(["qemu-io", "-f", "raw", *commands,
                        self.qemu_spec(image)], check=True,
                       capture_output=True, timeout=120)

    def diff_bytes(self, image):
        import json
        return sum(e["length"] for e in json.loads(
            self.rbd("diff", "--format", "json",
                     "%s/%s" % (self.pool, image))))


def write_local(path, data):
    with open(path, "r+b") as f:
        for offset, length, byte in data:
            f.seek(offset)
            f.write(bytes([byte]) * length)


@pytest.fixture(scope="module")
def ceph(minicloud_volumes):
    return Ceph(minicloud_volumes["ceph"])


@pytest.fixture(scope="module")
def images(ceph, tmp_path_factory):
    """Template T, its protected snapshot, clone C; local guest views."""
    prefix = "cs2os-rbdsrc-%s" % uuid.uuid4().hex[:8]
    template, clone = prefix + "-template", prefix + "-volume"
    local = tmp_path_factory.mktemp("rbd")
    made = []
    try:
        ceph.rbd("create", "--size", "%dM" % (SIZE // MiB),
                 "%s/%s" % (ceph.pool, template))
        made.append(template)
        ceph.write(template, TEMPLATE_DATA)
        ceph.rbd("snap", "create", "%s/%s@base" % (ceph.pool, template))
        ceph.rbd("snap", "protect", "%s/%s@base" % (ceph.pool, template))
        ceph.rbd("clone", "%s/%s@base" % (ceph.pool, template),
                 "%s/%s" % (ceph.pool, clone))
        made.append(clone)
        ceph.write(clone, CLONE_DATA)
        view = local / "guest-view.raw"
        with open(view, "wb") as f:
            f.truncate(SIZE)
        write_local(view, TEMPLATE_DATA + CLONE_DATA)
        yield types.SimpleNamespace(template=template, clone=clone,
                                    view=str(view), prefix=prefix)
    finally:
        for name in reversed(made):
            spec = "%s/%s" % (ceph.pool, name)
            if name == template:
                ceph.rbd("snap", "unprotect", spec + "@base")
                ceph.rbd("snap", "purge", "--no-progress", spec)
            ceph.rbd("rm", "--no-progress", spec)


def conf_for(ceph, **kw):
    values = dict(rbd_user=ceph.user, rbd_keyring=ceph.keyring,
                  rbd_conf=None, rbd_connect_timeout=5, stall_timeout=30,
                  chunk_size_kib=8192)
    values.update(kw)
    return types.SimpleNamespace(transfer=types.SimpleNamespace(**values))


def open_source(ceph, image, conf=None, **kw):
    request = {"transport": "rbd", "pool": ceph.pool, "image": image,
               "monitors": ceph.mon_host}
    request.update(kw)
    return transfer.get_source(request, conf or conf_for(ceph))


def copy(src, dest, offset=0, skip=(), mon=None, checkpoint=64 * MiB):
    """Copy ``src`` into ``dest`` as the agent does; bytes moved."""
    part = partial_file.PartialFile(str(dest), str(dest) + ".json",
                                    src.fingerprint(), checkpoint)
    assert part.resume_offset() == offset
    part.open(offset)
    try:
        moved = src.copy_to(part, mon or monitor(), offset, skip)
        part.finish(src.size())
    finally:
        part.close()
    return moved


def monitor(**kw):
    return transfer_monitor.TransferMonitor("rbd-test", "sync", 0, **kw)


def same_image(a, b):
    done = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                           str(a), str(b)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def allocated(path):
    return os.stat(path).st_blocks * 512


def test_clone_copies_the_whole_guest_view(ceph, images, tmp_path):
    """The clone's own objects and what it reads from its parent."""
    with open_source(ceph, images.clone) as src:
        expected = src.bytes_to_copy()
        # rbd diff (parent included) and the transport agree; the
        # template's 20 MiB extent, never written in the clone, is in.
        assert expected == ceph.diff_bytes(images.clone)
        assert any(o <= 20 * MiB < o + n for o, n in src._extents(0, ()))
        extents = len(list(src._extents(0, ())))
        moved = copy(src, tmp_path / "copy")
    assert moved == expected
    same_image(images.view, tmp_path / "copy")
    # Holes stayed holes: the copy holds what was read (each extent
    # rounded to file system blocks), no more.
    assert allocated(tmp_path / "copy") <= expected + extents * 4096
    assert allocated(tmp_path / "copy") < SIZE // 4


def test_header_and_ranges(ceph, images):
    with open(images.view, "rb") as f:
        view = f.read()
    ranges = [(20 * MiB - 10, 20), (0, 4096), (40 * MiB + 5, 9 * MiB),
              (SIZE - 3, 3)]
    with open_source(ceph, images.clone) as src:
        assert src.size() == SIZE
        assert src.read_header(4096) == view[:4096]
        assert src.read_ranges(ranges) == [view[o:o + n]
                                           for o, n in ranges]
        with pytest.raises(exception.SourceUnreadable):
            src.read_ranges([(SIZE - 1, 2)])
        assert src.fingerprint() == src.fingerprint()


def test_resume_after_a_cancel(ceph, images, tmp_path):
    dest = tmp_path / "copy"
    with open_source(ceph, images.clone) as src:
        mon = monitor()
        calls = []

        def advance(n, real=mon.advance):
            calls.append(n)
            real(n)
            mon.cancel()  # after the first piece

        mon.advance = advance
        part = partial_file.PartialFile(str(dest), str(dest) + ".json",
                                        src.fingerprint(), 1)
        part.resume_offset()
        part.open(0)
        with pytest.raises(exception.MigrationCancelled):
            src.copy_to(part, mon)
        part.close()
        assert len(calls) == 2  # the piece after the cancel was refused
        # The same, unchanged image: the next copy resumes.
        part = partial_file.PartialFile(str(dest), str(dest) + ".json",
                                        src.fingerprint(), 1)
        offset = part.resume_offset()
        assert 0 < offset < SIZE
        part.open(offset)
        moved = src.copy_to(part, monitor(), offset)
        part.finish(src.size())
        assert moved == src.bytes_to_copy(offset)
        assert moved < src.bytes_to_copy()
    same_image(images.view, dest)


def test_skipped_ranges_stay_holes(ceph, images, tmp_path):
    skip = ((0, 2 * MiB), (30 * MiB, 31 * MiB))
    with open_source(ceph, images.clone) as src:
        expected = src.bytes_to_copy(0, skip)
        overlap = sum(max(0, min(o + n, end) - max(o, start))
                      for o, n in src._extents(0, ()) for start, end in skip)
        assert 0 < overlap and expected == src.bytes_to_copy() - overlap
        moved = copy(src, tmp_path / "copy", skip=skip)
    assert moved == expected
    with open(images.view, "rb") as f:
        view = bytearray(f.read())
    for start, end in skip:
        view[start:end] = bytes(end - start)
    with open(tmp_path / "copy", "rb") as f:
        assert f.read() == bytes(view)


def test_snapshot_of_the_clone(ceph, images, tmp_path):
    """A named snapshot: what it held, whatever came after."""
    spec = "%s/%s@s1" % (ceph.pool, images.clone)
    ceph.rbd("snap", "create", spec)
    try:
        later = images.prefix + "-later"
        with open_source(ceph, images.clone, snapshot="s1") as src:
            before = src.fingerprint()
            ceph.write(images.clone, [(8 * MiB, 4096, 0x77)])
            assert src.fingerprint() == before
            copy(src, tmp_path / later)
        same_image(images.view, tmp_path / later)
    finally:
        ceph.rbd("snap", "rm", "--no-progress", spec)
        ceph.write(images.clone, [(8 * MiB, 4096, 0)])  # the view again


def test_a_write_during_the_copy_is_detected(ceph, images, tmp_path):
    with open_source(ceph, images.clone) as src:
        fingerprint = src.fingerprint()
        mon = monitor()
        written = []

        def advance(n, real=mon.advance):
            if not written:  # a writer comes and goes mid-copy
                ceph.write(images.clone, [(40 * MiB, 4096, 0x55)])
                written.append(n)
            real(n)

        mon.advance = advance
        with pytest.raises(exception.TransferFailed,
                           match="changed during the copy"):
            copy(src, tmp_path / "copy", mon=mon)
        assert src.fingerprint() != fingerprint


def test_an_image_in_use_is_refused(ceph, images, tmp_path):
    """A client with the image open (a running VM) could write to it."""
    watch = subprocess.Popen(
        ["rbd", "-c", ceph.conf, "--id", ceph.user, "--keyring",
         ceph.keyring, "watch", "%s/%s" % (ceph.pool, images.clone)],
        # It watches until a line arrives on its stdin (or it ends).
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "watcher=" not in ceph.rbd("status", "%s/%s" % (
                ceph.pool, images.clone)):
            assert time.monotonic() < deadline, "rbd watch never watched"
            time.sleep(0.2)
        with open_source(ceph, images.clone) as src:
            with pytest.raises(exception.SourceUnreadable,
                               match="open by another client"):
                copy(src, tmp_path / "copy")
    finally:
        # A killed watcher's watch outlives it (until Ceph times it out):
        # let it unwatch.
        try:
            watch.communicate(b"\n", timeout=30)
        except subprocess.TimeoutExpired:
            watch.kill()
            watch.wait()


def test_missing_image_and_pool(ceph, images):
    with pytest.raises(exception.SourceNotFound, match="no such image"):
        open_source(ceph, images.prefix + "-nothing")
    with pytest.raises(exception.SourceNotFound, match="no such image"):
        open_source(ceph, images.clone, snapshot="nothing")
    with pytest.raises(exception.SourceNotFound, match="no such pool"):
        transfer.get_source({"transport": "rbd", "pool": images.prefix,
                             "image": "x", "monitors": ceph.mon_host},
                            conf_for(ceph))


def test_a_bad_key_is_refused(ceph, images, tmp_path):
    keyring = tmp_path / "bad.keyring"
    keyring.write_text("[client.%s]\n\tkey = %s\n" % (
        ceph.user, "AQBk8FFl5X2nFBAAeS0hL5c7xHTLTquHxD0x8w=="))
    keyring.chmod(0o600)
    with pytest.raises(exception.SourceAuthFailed) as caught:
        open_source(ceph, images.clone,
                    conf=conf_for(ceph, rbd_keyring=str(keyring)))
    assert "client.%s" % ceph.user in str(caught.value)
    assert "AQBk8FFl" not in str(caught.value)


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_monitors_that_do_not_answer(ceph, images):
    started = time.monotonic()
    with pytest.raises(exception.SourceUnreachable, match="rbd_connect_"):
        open_source(ceph, images.clone, monitors="127.0.0.1:%d"
                    % closed_port(), conf=conf_for(ceph,
                                                   rbd_connect_timeout=2))
    assert time.monotonic() - started < 30


def test_copies_in_parallel_threads(ceph, images, tmp_path):
    """Two copies at once (two agents' migrations) do not disturb each
    other: every call releases the GIL and holds its own handles."""
    errors = []

    def one(name):
        try:
            with open_source(ceph, images.clone) as src:
                copy(src, tmp_path / name)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=("c%d" % n,))
               for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for n in range(2):
        same_image(images.view, tmp_path / ("c%d" % n))
