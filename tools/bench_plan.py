#!/usr/bin/env python3
"""Benchmark: a plan of 12 VMs against the same 12 migrated one by one.

Runs the whole cold chain on this machine, as bench_mirror.py does (the
CloudStack API stand-in whose VMs are running KVM domains on CloudStack's
layout, cs2os-agent and cs2os-conductor as their own processes on a
RabbitMQ vhost of their own, the minicloud's real Keystone, Glance,
Placement, Neutron and Nova), with ``[conductor] max_per_compute_host =
3``.  In the same run: 12 small VMs (each its own 64 MiB template, as
unrelated VMs are) migrated one after another, each requested as soon as
the last one ended; then 12 more as one plan onto the same compute host.
Migrated servers are deleted as soon as their migration succeeded, in
both phases alike (the minicloud holds 8 small servers).

It prints both times and their ratio (sequential / plan; issue 17's
target: at least 2.4), the plan's peak in flight on the host (from the
records: each migration from the end of its validate, where it takes its
slot, to its end; and sampled every 0.5 s), and for each phase what the
machine spent (tools/load_sampler.py: CPU by process group, disk busy
time) and which shared resource, if any, it saturated.

Needs root, tools/test-services.sh start and tools/minicloud/minicloud.sh
up.  Not a test: it asserts nothing.
"""

import argparse
import datetime
import os
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid

from cs2os_agent import virt
from cs2os_agent.common import states
from cs2os_agent.conductor import rpcapi as conductor_rpcapi

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools import bench_mirror  # noqa: E402
from tools import load_sampler  # noqa: E402
from tools.testbed import harness  # noqa: E402
from tools.testbed import images  # noqa: E402
from tools.testbed import warm_chain  # noqa: E402

LIMIT = 3
TARGET = 2.4
POLL = 0.1


class PlanChain(bench_mirror.Chain):
    """bench_mirror's chain, its conductor limited to LIMIT migrations in
    flight per compute host."""

    def start(self):
        make = warm_chain.make_conductor

        def limited(*args, **kwargs):
            kwargs["max_per_compute_host"] = LIMIT
            return make(*args, **kwargs)
        # Chain.start builds its conductor through this module attribute.
        warm_chain.make_conductor = limited
        try:
            super().start()
        finally:
            warm_chain.make_conductor = make
        # The chain's client waits 3 s for an answer; a plan's validate
        # and start do their work inside the call.
        self.api = conductor_rpcapi.ConductorAPI(timeout=600)

    def new_vms(self, count):
        return [self.boot_vm(images.make_cloudstack_volume(self.cs_root))
                for _ in range(count)]


class Deleter:
    """Deletes migrated servers in the background, as they succeed."""

    def __init__(self, conn):
        self.conn = conn
        self.queue = queue.Queue()
        self.errors = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            server_id = self.queue.get()
            try:
                server = self.conn.compute.get_server(server_id)
                self.conn.compute.delete_server(server)
                self.conn.compute.wait_for_delete(server, wait=300)
            except Exception as exc:  # noqa: BLE001 - reported at the end
                self.errors.append("%s: %s" % (server_id, exc))
            finally:
                self.queue.task_done()

    def drain(self):
        self.queue.join()


def _final(chain, migration_id):
    record = chain.api.get_migration(chain.ctxt, migration_id)
    return record if record["state"] in states.FINAL else None


def _succeeded(record, deleter):
    if record["state"] != states.SUCCEEDED:
        raise RuntimeError("migration %s %s: %s" % (
            record["id"], record["state"], record["error"]))
    deleter.queue.put(record["result"]["server_id"])


def sequential(chain, vms, deleter):
    records = []
    for vm in vms:
        created = chain.api.create_migration(chain.ctxt, {
            "source": vm.name, "host": chain.minicloud.compute_host})
        record = None
        while record is None:
            time.sleep(POLL)
            record = _final(chain, created["id"])
        _succeeded(record, deleter)
        records.append(record)
    return records


def planned(chain, vms, deleter, samples):
    plan = chain.api.create_plan(chain.ctxt, {
        "name": "bench-%s" % chain.run_id,
        "defaults": {"host": chain.minicloud.compute_host},
        "vms": [vm.name for vm in vms]})
    began = time.monotonic()
    chain.api.validate_plan(chain.ctxt, plan["id"])
    validated = time.monotonic() - began
    started = time.monotonic()
    chain.api.start_plan(chain.ctxt, plan["id"])
    ended = {}
    while len(ended) < len(vms):
        time.sleep(POLL)
        rows = chain.api.list_migrations(chain.ctxt, {"plan_id": plan["id"]})
        samples.append(sum(
            1 for r in rows if r["state"] in states.ACTIVE
            and r["step"] != "validate"))
        for row in rows:
            if row["id"] not in ended and row["state"] in states.FINAL:
                record = chain.api.get_migration(chain.ctxt, row["id"])
                _succeeded(record, deleter)
                ended[row["id"]] = record
    return list(ended.values()), time.monotonic() - started, validated


def _when(iso):
    return datetime.datetime.fromisoformat(iso).timestamp()


def peak_in_flight(records):
    """The most migrations holding a slot at once: each from its
    validate's "done" event (admitted) to its end."""
    edges = []
    for record in records:
        admitted = [e["created_at"] for e in record["events"]
                    if e["step"] == "validate" and e["message"] == "done"]
        edges.append((_when(admitted[0]), 1))
        edges.append((_when(record["finished_at"]), -1))
    peak = now = 0
    for _, delta in sorted(edges):
        now += delta
        peak = max(peak, now)
    return peak


def _phase(device, run, *args):
    sampler = load_sampler.LoadSampler(device)
    sampler.start()
    began = time.monotonic()
    try:
        result = run(*args)
    finally:
        sampler.stop()
    return result, time.monotonic() - began, sampler


def bench(args):
    run_id = uuid.uuid4().hex[:8]
    work = tempfile.mkdtemp(prefix="cs2os-bench-%s-" % run_id, dir="/var/tmp")
    os.chmod(work, 0o755)  # noqa: S103 - qemu runs as libvirt-qemu
    chain = PlanChain(args, work, run_id)
    cpus = os.cpu_count()
    try:
        chain.start()
        device = load_sampler.device_of(chain.minicloud.instances_path)
        deleter = Deleter(chain.minicloud.conn)
        rounds = []
        for n in range(args.rounds):
            vms = chain.new_vms(args.vms)
            time.sleep(bench_mirror.SETTLE_SECONDS)
            seq, seq_s, seq_load = _phase(device, sequential, chain, vms,
                                          deleter)
            deleter.drain()
            vms = chain.new_vms(args.vms)
            time.sleep(bench_mirror.SETTLE_SECONDS)
            samples = []
            (plan, plan_s, validate_s), _, plan_load = _phase(
                device, planned, chain, vms, deleter, samples)
            deleter.drain()
            row = {"sequential_s": seq_s, "plan_s": plan_s,
                   "ratio": seq_s / plan_s, "validate_s": validate_s,
                   "peak": peak_in_flight(plan),
                   "sampled_peak": max(samples),
                   "one_median_s": statistics.median(
                       _when(r["finished_at"]) - _when(r["created_at"])
                       for r in seq)}
            rounds.append(row)
            print("round %d: sequential %.1f s (one migration: median "
                  "%.1f s), plan %.1f s (validate before it: %.1f s), "
                  "ratio %.2f; plan peak in flight on %s: %d (records), "
                  "%d (sampled), limit %d" % (
                      n + 1, seq_s, row["one_median_s"], plan_s,
                      validate_s, row["ratio"],
                      chain.minicloud.compute_host, row["peak"],
                      row["sampled_peak"], LIMIT), flush=True)
            print("  sequential: %s" % seq_load.summary(cpus))
            print("  plan:       %s" % plan_load.summary(cpus))
            print("  cs2os CPU per migration (conductor, agent, their "
                  "Python): sequential %.2f s, plan %.2f s" % (
                      seq_load.per_item("cs2os", args.vms),
                      plan_load.per_item("cs2os", args.vms)))
            print("  plan bound: %s" % plan_load.bound(cpus), flush=True)
        if deleter.errors:
            print("server deletes failed: %s" % "; ".join(deleter.errors))
        return rounds
    finally:
        chain.stop()
        if args.keep:
            print("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--broker-url", default=harness.BROKER_URL)
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs) afterwards")
    args = parser.parse_args()
    # bench_mirror.Chain reads these; the cold flow uses neither.
    args.cutover_method, args.virtual_mib = None, 64
    virt.init()
    rounds = bench(args)
    ratio = statistics.median(r["ratio"] for r in rounds)
    peak = max(r["peak"] for r in rounds)
    print("\ncs2os plan benchmark: %d VMs, max_per_compute_host %d, %d "
          "round(s), %d cores: median ratio %.2f (target >= %.1f: %s), "
          "peak in flight %d (limit %d: %s)" % (
              args.vms, LIMIT, len(rounds), os.cpu_count(), ratio, TARGET,
              "met" if ratio >= TARGET else "NOT met", peak, LIMIT,
              "kept" if peak <= LIMIT else "PASSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
