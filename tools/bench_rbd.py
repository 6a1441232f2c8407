#!/usr/bin/env python3
"""Benchmark: the ``rbd`` transport against ``rbd export``, same run.

Makes an RBD image (default 1 GiB virtual, 400 MiB of random data in
whole 4 MiB objects at random places) in the minicloud's Ceph
(tools/minicloud/minicloud.sh up), then, alternating which goes first,
times per run: the baseline ``rbd export`` into a local file followed by
an fsync of it (the transport's copy is durable when it returns, so the
baseline is made durable too), and RbdSource.copy_to into a PartialFile
(connect, copy, finish), both into the same directory.  It prints each
run and the medians: MB/s of both (the image's allocated bytes by the
time taken: both copies hold the same data), their ratio (target >= 0.9),
and the bytes the transport moved against the allocated bytes that
``rbd diff`` reports (target <= 1.01).  The image and the files are
deleted at the end.

Not a test: it asserts nothing.  Needs root (the keyrings are the
minicloud's) and the ``rbd`` and ``qemu-img`` commands.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import uuid

from cs2os_agent import transfer
from cs2os_agent.transfer import monitor as transfer_monitor
from cs2os_agent.transfer import partial as partial_file
from cs2os_agent.transfer import rbdcopy

MiB = 1024 * 1024
OBJECT = 4 * MiB


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--data-mib", type=int, default=400)
    p.add_argument("--minicloud-json",
                   default="/var/lib/cs2os-minicloud/minicloud.json")
    p.add_argument("--depth", type=int, default=rbdcopy.DEPTH,
                   help="reads in flight (rbdcopy.DEPTH)")
    p.add_argument("--dir", default="/var/tmp",
                   help="where the copies are written")
    return p.parse_args()


class Ceph:
    def __init__(self, info):
        self.conf, self.pool = info["conf"], info["pool"]
        self.user, self.keyring = info["user"], info["keyring"]
        self.mon_host = info["mon_host"]

    def rbd(self, *args):
        return subprocess.run(
            ["rbd", "-c", self.conf, "--id", self.user, "--keyring",
             self.keyring, *args], check=True, capture_output=True,
            text=True).stdout

    def qemu_spec(self, image):
        return "rbd:%s/%s:conf=%s:id=%s:keyring=%s" % (
            self.pool, image, self.conf, self.user, self.keyring)


def make_local(path, size, data):
    """A sparse raw file: ``data`` bytes of random objects; their slots."""
    slots = random.Random(16).sample(  # noqa: S311 - places, not secrets
        range(size // OBJECT), data // OBJECT)
    with open(path, "wb") as f:
        f.truncate(size)
        for slot in slots:
            f.seek(slot * OBJECT)
            f.write(os.urandom(OBJECT))
    return slots


def baseline(ceph, image, out):
    started = time.monotonic()
    ceph.rbd("export", "--no-progress", "%s/%s" % (ceph.pool, image), out)
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - started, None


def transport(ceph, image, out):
    conf = types.SimpleNamespace(transfer=types.SimpleNamespace(
        rbd_user=ceph.user, rbd_keyring=ceph.keyring, rbd_conf=None,
        rbd_connect_timeout=10, stall_timeout=120, chunk_size_kib=8192))
    started = time.monotonic()
    with transfer.get_source({"transport": "rbd", "pool": ceph.pool,
                              "image": image, "monitors": ceph.mon_host},
                             conf) as src:
        part = partial_file.PartialFile(out, out + ".json",
                                        src.fingerprint(), 256 * MiB)
        part.resume_offset()
        part.open(0)
        mon = transfer_monitor.TransferMonitor("bench", "sync", 0)
        moved = src.copy_to(part, mon)
        part.finish(src.size())
    return time.monotonic() - started, moved


def remove(*paths):
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)


def main():
    args = parse_args()
    rbdcopy.DEPTH = args.depth
    with open(args.minicloud_json) as f:
        ceph = Ceph(json.load(f)["ceph"])
    image = "cs2os-rbdsrc-bench-%s" % uuid.uuid4().hex[:8]
    work = tempfile.mkdtemp(prefix="cs2os-bench-rbd-", dir=args.dir)
    local = os.path.join(work, "source.raw")
    size, data = args.size_mib * MiB, args.data_mib * MiB
    made = False
    try:
        make_local(local, size, data)
        ceph.rbd("create", "--size", "%dM" % args.size_mib,
                 "%s/%s" % (ceph.pool, image))
        made = True
        subprocess.run(["qemu-img", "convert", "-n", "--target-is-zero",
                        "-f", "raw", "-O", "raw", local,
                        ceph.qemu_spec(image)], check=True)
        allocated = sum(e["length"] for e in json.loads(ceph.rbd(
            "diff", "--format", "json", "%s/%s" % (ceph.pool, image))))
        print("image %s/%s: %d MiB virtual, %.1f MiB allocated (rbd diff)"
              % (ceph.pool, image, args.size_mib, allocated / MiB))
        run(args, ceph, image, work, local, allocated)
    finally:
        if made:
            ceph.rbd("rm", "--no-progress", "%s/%s" % (ceph.pool, image))
        shutil.rmtree(work, ignore_errors=True)


def run(args, ceph, image, work, local, allocated):
    out_base = os.path.join(work, "export.raw")
    out_copy = os.path.join(work, "copy.raw")
    times = {"rbd export": [], "RbdSource": []}
    moved_all = []
    for n in range(args.runs):
        order = [("rbd export", baseline, out_base),
                 ("RbdSource", transport, out_copy)]
        if n % 2:
            order.reverse()
        line = []
        for name, fn, out in order:
            remove(out, out + ".json")
            subprocess.run(["sync"], check=True)
            seconds, moved = fn(ceph, image, out)
            times[name].append(seconds)
            if moved is not None:
                moved_all.append(moved)
            line.append("%s %.2f s (%.0f MB/s)" % (
                name, seconds, allocated / seconds / 1e6))
        if n == 0:
            for out in (out_base, out_copy):
                subprocess.run(["qemu-img", "compare", "-q", "-f", "raw",
                                "-F", "raw", local, out], check=True)
        print("run %d: %s" % (n + 1, "; ".join(line)))
        remove(out_base, out_copy, out_copy + ".json")
    base = allocated / statistics.median(times["rbd export"]) / 1e6
    ours = allocated / statistics.median(times["RbdSource"]) / 1e6
    moved = statistics.median(moved_all)
    print("reads in flight: %d of %d MiB" % (rbdcopy.DEPTH,
                                            rbdcopy.READ_SIZE // MiB))
    print("median rbd export + fsync: %.0f MB/s" % base)
    print("median RbdSource.copy_to:  %.0f MB/s" % ours)
    print("ratio: %.2f (target >= 0.9)" % (ours / base))
    print("bytes moved / allocated: %d / %d = %.4f (target <= 1.01)"
          % (moved, allocated, moved / allocated))
    print("copies identical to the source image: yes (qemu-img compare, "
          "run 1)")


if __name__ == "__main__":
    sys.exit(main())
