#!/usr/bin/env python3
"""Benchmark: warm migration's mirror against raw SSH, and its downtime.

Runs the whole warm chain on this machine, as the end-to-end tests do: the
CloudStack API stand-in whose VM is a running transient KVM domain on
CloudStack's layout, a private sshd on 127.0.0.1 playing the KVM host's
(the agent's tunnel and the conductor's qemu+ssh connection log in to
it), cs2os-agent and cs2os-conductor as their own processes on a RabbitMQ
vhost of their own, and the minicloud's real Keystone, Glance, Placement
and Nova.  Each run migrates a fresh VM (same template; an overlay of
``--allocated-mib`` of random data) with ``mode: warm``, ``cutover:
auto`` and ``--cutover-method`` (shutdown, the default, or force), and
times in the same run, just before the migration, the raw
SSH transport on the same overlay: ``ssh host cat A > file`` with the
agent's own ssh command line (key, known_hosts, cipher), into the
instances directory's file system.

It prints each run and the medians: mirror MB/s (the job's bytes over
the time from the block copy's start to READY, as the conductor sees it:
woken by libvirt's job event, else at its 0.1 s polls) and the raw
transport's, their ratio, the cutover (shutdown: CloudStack's stop
request -> QEMU's events prove T, the guest's shutdown included; force:
suspend + end the job) and the tool-added downtime: from the moment the
source stopped serving (shutdown: its QEMU's SHUTDOWN event; force: the
conductor freezes it) to the moment the conductor asks Nova to start the
server, as the conductor records them. Targets (issue 6): downtime < 2
s, mirror >= 0.8x the raw SSH transport.

Needs root, tools/test-services.sh start and tools/minicloud/minicloud.sh
up.  Not a test: it asserts nothing.
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from cs2os_agent import virt
from cs2os_agent.common import states
from cs2os_agent.transfer import sshcmd

# The test bed comes from the checkout: tox sets PYTHONPATH, a plain
# ``python tools/bench_mirror.py`` from the repository root does not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.testbed import bench_chain  # noqa: E402
from tools.testbed import harness  # noqa: E402
from tools.testbed import images  # noqa: E402

MiB = images.MiB
# The guest's boot sector and message live in the first sectors; the
# overlay's random data starts after them, in whole clusters.
DATA_OFFSET = 4 * MiB
# Seconds of quiet before each measurement (2 vCPUs shared by everything).
SETTLE_SECONDS = 5


def write_random(volume, random_file, allocated_mib):
    """``allocated_mib`` of the random file into the overlay A.

    Written through a json: spec without backing: A's header names the
    KVM host's path of B, which does not exist here.
    """
    spec = {"driver": "qcow2",
            "file": {"driver": "file", "filename": volume.overlay},
            "backing": None}
    images.run("qemu-io", "-c", "write -s %s %d %d"
               % (random_file, DATA_OFFSET, allocated_mib * MiB),
               "json:" + json.dumps(spec))


def read_once(path):
    with open(path, "rb") as f:
        while f.read(8 * MiB):
            pass


def ssh_cat(sshd, path, dest):
    """The raw transport: the agent's ssh command line, ``cat`` to a file."""
    options = sshcmd.SshOptions(sshd.client_key, sshd.known_hosts, 10, 60,
                                1 << 20)
    target = sshcmd.SshTarget("127.0.0.1", sshd.port, "root", path)
    argv = sshcmd.build_argv(target, options,
                             "cat -- %s" % shlex.quote(path))
    os.sync()
    started = time.monotonic()
    with open(dest, "wb") as f:
        subprocess.run(argv, stdout=f, check=True)
    seconds = time.monotonic() - started
    moved = os.path.getsize(dest)
    os.unlink(dest)
    return moved, seconds


def new_vm(chain, args, template_of=None):
    return images.make_cloudstack_volume(
        chain.cs_root, template_size=args.virtual_mib * MiB,
        writes=(), same_template_as=template_of)


def migrate(chain, args, vm):
    # As before ssh cat: no dirty page cache (the overlay was just
    # written) left for the kernel to write back during the measure.
    os.sync()
    return chain.migrate(vm, mode="warm",
                         cutover_method=args.cutover_method)


def bench(args):
    run_id = uuid.uuid4().hex[:8]
    work = tempfile.mkdtemp(prefix="cs2os-bench-%s-" % run_id, dir="/var/tmp")
    os.chmod(work, 0o755)  # noqa: S103 - qemu runs as libvirt-qemu
    chain = bench_chain.Chain(work, run_id, args.broker_url)
    rows = []
    try:
        chain.start()
        random_file = os.path.join(work, "random.bin")
        with open(random_file, "wb") as f:
            for _ in range(args.allocated_mib // 8):
                f.write(os.urandom(8 * MiB))
        scratch = os.path.join(chain.minicloud.instances_path,
                               "cs2os-bench-%s.copy" % run_id)
        template_of = None
        for run in range(args.runs):
            volume = new_vm(chain, args, template_of)
            template_of = template_of or volume
            write_random(volume, random_file, args.allocated_mib)
            read_once(volume.overlay)  # both read from the page cache
            vm = chain.boot_vm(volume)
            # Each measurement starts on a quiet machine: not while the
            # migrated server boots or the last one is being deleted.
            time.sleep(SETTLE_SECONDS)
            # Before the migration, never after it: the raw transport then
            # runs with the same guests as the mirror (the CloudStack VM
            # running, no Nova server running).  On this machine kind (a
            # VM, its guests nested) ssh cat of the same overlay measured
            # 628 and 595 MB/s before a migration, 378 with the migrated
            # server running (idle), 654 and 650 once it was deleted; the
            # idle guest's cost shows in no process's CPU time here.  A
            # baseline taken after the migration made the ratio look
            # better than it is (0.75 where it was 0.60).
            moved, cat_s = ssh_cat(chain.sshd, volume.overlay, scratch)
            time.sleep(SETTLE_SECONDS)
            done = migrate(chain, args, vm)
            result = done["result"]
            row = {
                "mirror_bytes": result["mirror"]["bytes"],
                "mirror_s": result["mirror"]["seconds"],
                "mirror_mbs": result["mirror"]["bytes"]
                / result["mirror"]["seconds"] / 1e6,
                "cat_bytes": moved,
                "cat_s": cat_s,
                "cat_mbs": moved / cat_s / 1e6,
                # shutdown: stop request -> proof; force: suspend + end.
                **bench_chain.warm_figures(result),
            }
            row["ratio"] = row["mirror_mbs"] / row["cat_mbs"]
            rows.append(row)
            print("run %d: mirror %.0f MB/s (%d bytes in %.2f s), ssh cat "
                  "%.0f MB/s, ratio %.2f, cutover %.1f ms, finish %.2f s, "
                  "downtime %.2f s" % (
                      run + 1, row["mirror_mbs"], row["mirror_bytes"],
                      row["mirror_s"], row["cat_mbs"], row["ratio"],
                      row["cutover_ms"], row["finish_s"],
                      row["downtime_s"]), flush=True)
            chain.delete_server(result["server_id"])
            # The run's overlay (its data) goes; the template stays.
            os.unlink(volume.overlay)
            os.unlink(volume.reference)
        return rows
    finally:
        chain.stop()
        if args.keep:
            print("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def print_table(rows, args):
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print("\ncs2os warm-migration benchmark: %d MiB allocated overlay on a "
          "%d MiB template, cutover method %s, %d runs, %d cores; medians"
          % (args.allocated_mib, args.virtual_mib, args.cutover_method,
             len(rows), os.cpu_count()))
    header = ("%-6s %9s %9s %6s %10s %8s %10s"
              % ("", "mirror", "ssh cat", "ratio", "cutover", "finish",
                 "downtime"))
    print(header)
    for i, r in enumerate(rows, 1):
        print("%-6s %9.0f %9.0f %6.2f %7.1f ms %6.2f s %8.2f s" % (
            "run %d" % i, r["mirror_mbs"], r["cat_mbs"], r["ratio"],
            r["cutover_ms"], r["finish_s"], r["downtime_s"]))
    print("%-6s %9.0f %9.0f %6.2f %7.1f ms %6.2f s %8.2f s" % (
        "median", med["mirror_mbs"], med["cat_mbs"], med["ratio"],
        med["cutover_ms"], med["finish_s"], med["downtime_s"]))
    print("MB/s.  mirror = the block copy's bytes (the overlay's allocated "
          "data) over start -> READY; ssh cat = the raw SSH transport on "
          "the same overlay file; cutover = %s; finish "
          "= the agent closing, checking and staging T; downtime = "
          "%s -> Nova start requested (cutover, finish, "
          "swap and the record's checkpoints).  Targets: downtime < 2 s, "
          "ratio >= 0.8: downtime %s, ratio %s."
          % ("stop request -> QEMU's events prove T (the guest's "
             "shutdown included)"
             if args.cutover_method == "shutdown"
             else "suspend + end the job",
             "the source's QEMU reports its shutdown"
             if args.cutover_method == "shutdown"
             else "CloudStack VM frozen",
             "met" if med["downtime_s"] < 2 else "NOT met",
             "met" if med["ratio"] >= 0.8 else "NOT met"))
    return med


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--allocated-mib", type=int, default=1024)
    parser.add_argument("--virtual-mib", type=int, default=1152,
                        help="the template's (and the overlay's) virtual "
                        "size; it must hold --allocated-mib past 4 MiB")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cutover-method", choices=states.CUTOVER_METHODS,
                        default=states.DEFAULT_CUTOVER_METHOD)
    parser.add_argument("--broker-url", default=harness.BROKER_URL)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs) afterwards")
    args = parser.parse_args()
    if args.allocated_mib % 8 or \
            args.allocated_mib * MiB + DATA_OFFSET > args.virtual_mib * MiB:
        parser.error("--allocated-mib must be a multiple of 8 that fits "
                     "in --virtual-mib past the first 4 MiB")
    virt.init()
    rows = bench(args)
    med = print_table(rows, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "median": med}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
