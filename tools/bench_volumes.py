#!/usr/bin/env python3
"""Benchmark: a data disk written into an RBD Cinder volume, same run.

Builds two CloudStack-like data disks in a temp dir of its own: a qcow2
overlay (default 1 GiB virtual, 100 MiB of random data, a third of it
over the template's) on a qcow2 template (300 MiB of random data), and a
standalone qcow2 (400 MiB of random data, the rest holes); the random
data lies in extents of 64 KiB to 4 MiB at random places.  Then:

1. Bytes moved against allocated: each disk's chain is copied once with
   the real ``path`` transport by ``volumes.copy_chain`` (as the agent's
   sync_volume does) and linked (``volumes.link_chain``).  Allocated is
   the source files' st_blocks * 512 (data and qcow2 metadata, what the
   file holds on disk); target <= 1.01.
2. Write rate into RBD (the minicloud's Ceph, tools/minicloud/minicloud.sh
   up; pool, user and keyring from its minicloud.json): per run and per
   disk, alternating which goes first, the baseline ``rbd import`` of the
   disk's guest view as a sparse local raw file (made once with
   ``qemu-img convert -O raw``; rbd import skips zero blocks) into a new
   image, and the candidate ``volumes.write`` of the linked local chain
   into a new empty image of the same size (``rbd create``) as a
   ``VolumeTarget`` of kind rbd with the cephx key from
   ``volume_target.keyring_key``.  Its qemu-img convert time ("write") is
   the rate compared with rbd import (target >= 0.9); its total also
   counts the ``qemu-img info`` before and the verifying ``qemu-img
   compare`` after.  MB/s = the guest view's data bytes (``qemu-img
   map``, data extents) / seconds, 1 MB = 10^6 bytes.  ``rbd du`` (whole
   objects) and ``rbd diff`` show both images' used and allocated bytes
   (a thin volume: about equal).

Medians over --runs (default 5), after one warm-up import and write of
each disk (not counted: the first writes into a fresh Ceph are slower).
Its RBD images are named ``cs2os-benchvol-<8 hex>-*``; exactly those are
removed, after each run and at the end, also on failure or interrupt.
``--convert-args`` adds options to the agent's ``qemu-img convert -n``
(with ``=``, e.g. ``--convert-args="-W -m 16"``), to compare them in the
same set-up.

Not a test: it asserts nothing.  Needs root (the minicloud's keyrings),
``rbd``, ``qemu-img`` and QEMU's rbd block driver.
"""

import argparse
import json
import logging
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from oslo_config import cfg

from cs2os_agent import conf as cs2os_conf
from cs2os_agent import qemu_img
from cs2os_agent import transfer
from cs2os_agent.agent import volume_target
from cs2os_agent.agent import volumes
from cs2os_agent.transfer import monitor as transfer_monitor

MiB = 1024 * 1024
GRAIN = 64 * 1024  # a qcow2 cluster: extents start and end on one
PREFIX = "cs2os-benchvol-"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--size-mib", type=int, default=1024,
                   help="virtual size of both disks")
    p.add_argument("--template-mib", type=int, default=300)
    p.add_argument("--overlay-mib", type=int, default=100)
    p.add_argument("--standalone-mib", type=int, default=400)
    p.add_argument("--minicloud-json",
                   default="/var/lib/cs2os-minicloud/minicloud.json")
    p.add_argument("--dir", default="/var/tmp",
                   help="where the disks and copies are made")
    p.add_argument("--convert-args", default="",
                   help="extra options for the agent's qemu-img convert, "
                   "e.g. --convert-args=-W")
    return p.parse_args()


class Ceph:
    def __init__(self, path):
        try:
            with open(path) as f:
                info = json.load(f)["ceph"]
            self.conf, self.pool = info["conf"], info["pool"]
            self.user, self.keyring = info["user"], info["keyring"]
            mon = info["mon_host"].split(",")[0]
        except (OSError, ValueError, KeyError, TypeError) as e:
            sys.exit("bench_volumes: no usable \"ceph\" entry in %s (%s); "
                     "start the minicloud: tools/minicloud/minicloud.sh up"
                     % (path, e))
        host, _, port = mon.rpartition(":")
        self.hosts = ((host, port or "6789"),)
        if os.path.basename(self.keyring) != "ceph.client.%s.keyring" \
                % self.user:
            sys.exit("bench_volumes: keyring %s is not named ceph.client.%s"
                     ".keyring, as keyring_key expects" % (self.keyring,
                                                           self.user))
        self.made = []  # images this run created, not yet removed

    def rbd(self, *args):
        argv = ["rbd", "-c", self.conf, "--id", self.user, "--keyring",
                self.keyring, *args]
        done = subprocess.run(argv, capture_output=True, text=True,
                              check=False)
        if done.returncode:
            raise RuntimeError("%s: exit %d: %s" % (
                " ".join(args[:2]), done.returncode, done.stderr.strip()))
        return done.stdout

    def spec(self, image):
        return "%s/%s" % (self.pool, image)

    def qemu_spec(self, image):  # key from the keyring file, never argv
        return "rbd:%s/%s:conf=%s:id=%s:keyring=%s" % (
            self.pool, image, self.conf, self.user, self.keyring)

    def used(self, image):
        return json.loads(self.rbd("du", "--format", "json",
                                   self.spec(image)))["images"][0]["used_size"]

    def written(self, image):
        """Bytes ``rbd diff`` lists as allocated (finer than du's objects)."""
        return sum(e["length"] for e in json.loads(self.rbd(
            "diff", "--format", "json", self.spec(image))))

    def remove(self, image, patience=90):
        """A qemu-img still writing it (its parent was stopped) holds a
        watch on it: rm waits for it to end, or Ceph to drop it (30 s)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self.rbd("rm", "--no-progress", self.spec(image))
                break
            except RuntimeError as e:
                if "No such file" in str(e):
                    break
                if "watchers" not in str(e) or time.monotonic() > deadline:
                    print("could not remove %s: %s" % (self.spec(image), e))
                    return
                time.sleep(2)
        self.made.remove(image)


def run(*argv):
    subprocess.run(argv, check=True, capture_output=True)


def pick_extents(rng, size, total, over=(), overlap=0.0):
    """Non-overlapping (offset, length) extents of GRAIN multiples that add
    up to ``total``; about ``overlap`` of them start inside ``over``."""
    used = bytearray(size // GRAIN)
    extents, left = [], total // GRAIN
    while left:
        length = min(left, rng.choice((1, 2, 4, 8, 16, 32, 64)))
        if over and rng.random() < overlap:
            start, span = rng.choice(over)
            start = start // GRAIN + rng.randrange(span // GRAIN)
        else:
            start = rng.randrange(len(used))
        length = min(length, len(used) - start)
        if any(used[start:start + length]):
            continue
        used[start:start + length] = b"\1" * length
        extents.append((start * GRAIN, length * GRAIN))
        left -= length
    return sorted(extents)


def write_raw(path, size, extents):
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in extents:
            f.seek(offset)
            f.write(os.urandom(length))


def make_disks(args, pool_dir, scratch):
    """{name: (source files top-down, guest view raw file)}."""
    rng = random.Random(16)  # noqa: S311 - places, not secrets
    size = args.size_mib * MiB
    template, overlay, standalone = (os.path.join(pool_dir, str(uuid.uuid4()))
                                     for _ in range(3))
    raw = os.path.join(scratch, "data.raw")
    base = pick_extents(rng, size, args.template_mib * MiB)
    write_raw(raw, size, base)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, template)
    write_raw(raw, size, pick_extents(rng, size, args.overlay_mib * MiB,
                                      base, 1 / 3))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", template, "-F",
        "qcow2", overlay)
    # Its data alone: opened without its backing file, the overlay reads
    # as zeros, so --target-is-zero allocates only the random extents.
    alone = {"driver": "qcow2", "backing": None,
             "file": {"driver": "file", "filename": overlay}}
    run("qemu-img", "convert", "-n", "--target-is-zero", "-f", "raw", "-O",
        "qcow2", raw, "json:" + json.dumps(alone))
    write_raw(raw, size, pick_extents(rng, size, args.standalone_mib * MiB))
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, standalone)
    os.unlink(raw)
    disks = {}
    for name, files in (("chain", [overlay, template]),
                        ("standalone", [standalone])):
        guest = os.path.join(scratch, "%s.raw" % name)
        run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", files[0],
            guest)
        disks[name] = (files, guest)
    return disks


def make_conf(roots):
    conf = cfg.ConfigOpts()
    for module in cs2os_conf.ALL_MODULES:
        module.register_opts(conf)
    conf(args=[], project="cs2os", default_config_files=[],
         default_config_dirs=[])
    conf.set_override("allowed_source_roots", roots, group="agent")
    return conf


def copy_disk(conf, files, instance_dir):
    """Copy and link the chain as sync_volume does; (local top, virtual
    size, bytes copied, st_blocks bytes, qemu-img map data bytes)."""
    volume_id = str(uuid.uuid4())
    srcs = [transfer.get_source({"transport": "path", "path": path}, conf)
            for path in files]
    try:
        virtual_size, headers = volumes.inspect(srcs, "qcow2")
        paths, copied = volumes.copy_chain(
            srcs, headers, instance_dir, volume_id,
            lambda total: transfer_monitor.TransferMonitor(
                "bench", "sync_volume", total, report=lambda progress: None),
            conf.transfer.checkpoint_mib * MiB)
    finally:
        for src in srcs:
            src.close()
    volumes.link_chain(paths)
    blocks = sum(os.stat(path).st_blocks * 512 for path in files)
    mapped = sum(qemu_img.allocated_bytes(path, "qcow2") for path in paths)
    return paths[0], virtual_size, copied, blocks, mapped


def guest_data(top):
    return sum(e["length"] for e in qemu_img.map(top, "qcow2")
               if e.get("data"))


def add_convert_args(extra):
    """Put ``extra`` into every ``qemu-img convert -n`` the agent runs."""
    execute = qemu_img._execute

    def patched(args, prlimit=None, passthrough=()):
        if args[:1] == ["convert"] and "-n" in args:
            args = ["convert", *extra, *args[1:]]
        return execute(args, prlimit=prlimit, passthrough=passthrough)

    qemu_img._execute = patched


def sync():
    subprocess.run(["sync"], check=True)


def baseline(ceph, image, guest, _disk):
    ceph.made.append(image)
    sync()
    started = time.monotonic()
    ceph.rbd("import", "--no-progress", guest, ceph.spec(image))
    return {"time": time.monotonic() - started}


def candidate(ceph, image, _guest, disk):
    ceph.rbd("create", "--size", "%dB" % disk["virtual"], ceph.spec(image))
    ceph.made.append(image)
    target = volume_target.VolumeTarget(
        volume_id=str(uuid.uuid4()), kind="rbd", path=ceph.spec(image),
        fmt="raw", hosts=ceph.hosts, user=ceph.user, secret_uuid=None,
        target_dev="vdb")
    key = volume_target.keyring_key(os.path.dirname(ceph.keyring), ceph.user)
    sync()
    started = time.monotonic()
    _length, write_s, verify_s = volumes.write(disk["top"], "qcow2",
                                               disk["virtual"], target, key)
    return {"time": write_s, "verify": verify_s,
            "total": time.monotonic() - started}


def bench(args, ceph, tag, disks):
    results = {name: {"import": [], "write": [], "total": [], "verify": [],
                      "du": []} for name in disks}
    for name, disk in disks.items():  # warm-up, not counted
        for what, fn in (("import", baseline), ("write", candidate)):
            image = "%s%s-%s-warmup-%s" % (PREFIX, tag, name, what)
            fn(ceph, image, disk["guest"], disk)
            ceph.remove(image)
    for n in range(args.runs):
        for name, disk in disks.items():
            order = [("import", baseline), ("write", candidate)]
            if n % 2:
                order.reverse()
            line, images = [], {}
            for what, fn in order:
                image = "%s%s-%s-r%d-%s" % (PREFIX, tag, name, n + 1, what)
                images[what] = image
                got = fn(ceph, image, disk["guest"], disk)
                res = results[name]
                res[what].append(got["time"])
                text = "%s %.2f s (%.0f MB/s)" % (
                    "rbd import" if what == "import" else "write",
                    got["time"], disk["data"] / got["time"] / 1e6)
                if what == "write":
                    res["total"].append(got["total"])
                    res["verify"].append(got["verify"])
                    text += ", verify %.2f s, total %.2f s" % (
                        got["verify"], got["total"])
                line.append(text)
            if n == 0:  # the baseline holds the guest view too
                run("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw",
                    disk["guest"], ceph.qemu_spec(images["import"]))
            du = tuple((ceph.used(images[what]), ceph.written(images[what]))
                       for what in ("import", "write"))
            results[name]["du"].append(du)
            print("run %d %-10s %s; rbd du %.0f / %.0f MiB, rbd diff %.1f / "
                  "%.1f MiB" % (n + 1, name, "; ".join(line), du[0][0] / MiB,
                                du[1][0] / MiB, du[0][1] / MiB,
                                du[1][1] / MiB), flush=True)
            for image in images.values():
                ceph.remove(image)
    return results


def summary(args, disks, results):
    print()
    print("=== data disk -> RBD volume: %d runs, medians ===" % args.runs)
    print("qemu-img convert -n extra options: %s"
          % (args.convert_args or "none (the agent's as they are)"))
    ratios = []
    for name, disk in disks.items():
        res = results[name]
        base = disk["data"] / statistics.median(res["import"]) / 1e6
        ours = disk["data"] / statistics.median(res["write"]) / 1e6
        total = disk["data"] / statistics.median(res["total"]) / 1e6
        ratios.append(ours / base)
        du_import, du_write = (
            [statistics.median(d[k][i] for d in res["du"]) for i in (0, 1)]
            for k in (0, 1))
        print("%s (%d file(s), %d MiB virtual, %.1f MiB guest data):" % (
            name, len(disk["files"]), disk["virtual"] // MiB,
            disk["data"] / MiB))
        print("  bytes moved / allocated (st_blocks): %d / %d = %.4f "
              "(target <= 1.01)" % (disk["copied"], disk["blocks"],
                                    disk["copied"] / disk["blocks"]))
        print("  guest data in the files (qemu-img map): %.1f MiB"
              % (disk["mapped"] / MiB))
        print("  median rbd import:           %.0f MB/s" % base)
        print("  median agent write:          %.0f MB/s" % ours)
        print("  ratio write / rbd import:    %.2f (target >= 0.9)"
              % (ours / base))
        print("  median write+verify (total): %.0f MB/s (verify %.2f s)"
              % (total, statistics.median(res["verify"])))
        print("  rbd du used: import %.1f MiB, agent %.1f MiB (%.3fx; whole "
              "4 MiB objects)" % (du_import[0] / MiB, du_write[0] / MiB,
                                  du_write[0] / du_import[0]))
        print("  rbd diff allocated: import %.1f MiB, agent %.1f MiB (%.3fx)"
              % (du_import[1] / MiB, du_write[1] / MiB,
                 du_write[1] / du_import[1]))
    print("worst ratio: %.2f (target >= 0.9)" % min(ratios))
    print("volumes identical to the disks: yes (volumes.write's qemu-img "
          "compare, every run; rbd import's image: run 1)")


def main():
    args = parse_args()
    # Its "Safety check backing_file ... failed" for every overlay: the
    # agent inspects backing files itself (qcow2.inspect_header).
    logging.getLogger("oslo_utils.imageutils.format_inspector").setLevel(
        logging.ERROR)
    ceph = Ceph(args.minicloud_json)
    if args.size_mib * MiB % GRAIN:
        sys.exit("bench_volumes: --size-mib must be whole MiB")
    if args.convert_args:
        add_convert_args(shlex.split(args.convert_args))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    tag = uuid.uuid4().hex[:8]
    work = tempfile.mkdtemp(prefix="cs2os-bench-volumes-", dir=args.dir)
    try:
        pool_dir = os.path.join(work, "mnt", str(uuid.uuid4()))
        instance_dir = os.path.join(work, "instance")
        os.makedirs(pool_dir)
        os.makedirs(instance_dir)
        made = make_disks(args, pool_dir, work)
        conf = make_conf([os.path.join(work, "mnt")])
        disks = {}
        for name, (files, guest) in made.items():
            top, virtual, copied, blocks, mapped = copy_disk(
                conf, files, instance_dir)
            disks[name] = {"files": files, "guest": guest, "top": top,
                           "virtual": virtual, "copied": copied,
                           "blocks": blocks, "mapped": mapped,
                           "data": guest_data(top)}
            print("%s: %d file(s), %d MiB virtual, %.1f MiB guest data; "
                  "copied %d of %d allocated bytes" % (
                      name, len(files), virtual // MiB,
                      disks[name]["data"] / MiB, copied, blocks))
        print("RBD images %s/%s%s-*" % (ceph.pool, PREFIX, tag), flush=True)
        results = bench(args, ceph, tag, disks)
        summary(args, disks, results)
    finally:
        for image in list(ceph.made):
            ceph.remove(image)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
