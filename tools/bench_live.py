#!/usr/bin/env python3
"""Benchmark: live mode's guest outage against warm mode's, in one run.

    flock /tmp/cs2os-heavy.lock .tox/ci/bin/python -m tools.bench_live \
        [--runs N] [--cutover-method shutdown|force]

One chain (tools/testbed/bench_chain with ``live_host``, as the live
end-to-end tests': the stand-in CloudStack whose KVM host is a second
libvirtd, cs2os-conductor and cs2os-agent as their own processes, the
minicloud's real Nova on the main libvirtd).  Each run migrates a fresh
counter guest (tools/testbed/live_kvm.make_live_volume: it prints
``C=<counter>`` 100 times a second on its serial port) with ``mode:
live``, then another, made the same way, with ``mode: warm``
(``cutover: auto``, ``--cutover-method``); the consoles are read every
millisecond wherever the guest prints (tools/testbed/live_consoles).

Figures (every "outage" and "pause" is the guest's own: the time between
two of its counter lines, read as they appear; it includes up to one
10 ms period of the counter):

- live: the pause at the hop (A's last line -> the temporary domain's
  first) and at the move (-> B's first, Nova's console.log), the counter
  continuous (no reboot); QEMU's downtime of each (the hop: libvirt's
  completed job; the move: A's query-migrate); outage = both pauses;
- warm: outage = A's last counter line (the source stopped) -> the first
  counter line of Nova's guest (it boots);
- tool-added time, one definition for both: the part of the outage
  cs2os's own work takes, not what QEMU's migration or Nova and the
  guest's boot take anyway.  live: each pause minus QEMU's downtime of
  it, summed; warm: the source stopped serving (its QEMU's SHUTDOWN
  event, or frozen) -> Nova asked to start the server, as the conductor
  records it (tools/bench_mirror's "downtime": bench_chain.warm_figures);
- total: the migration record's started_at -> finished_at;
- other gap: the longest gap between two counter lines of one console
  while the migration ran: a stall of the guest that is no switch of host
  (live: e.g. during the move's pre-copy; warm: the mirror's synchronous
  writes), shown apart, not in the outage.

Then the medians and the ratio live/warm of the guest outage (medians).
Everything made carries cs2os-bench-<random> / bench-<random> and is
removed afterwards, also after a failure.  Needs root,
tools/test-services.sh start and tools/minicloud/minicloud.sh up.  Not a
test: besides the guest's continuity it asserts nothing.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

import libvirt

from cs2os_agent import virt
from cs2os_agent.common import states
from tools.testbed import bench_chain
from tools.testbed import harness
from tools.testbed import live_consoles
from tools.testbed import live_kvm

# Seconds of quiet before each migration (2 vCPUs shared by everything),
# as tools/bench_mirror.py.
SETTLE_SECONDS = 5
# Where the flow is once Nova's server exists and before the guest can
# print into its instance directory.
LIVE_WATCH_STEPS = ("target", "hop")
WARM_WATCH_STEPS = ("mirror", "ready", "cutover", "finish", "swap")
GUEST_MIB = 64  # m1.tiny's memory: live mode needs A's to be B's


# -- pure parts: figures from the records and the consoles, the table -------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cutover-method", choices=states.CUTOVER_METHODS,
                        default=states.DEFAULT_CUTOVER_METHOD,
                        help="warm mode's (default %(default)s)")
    parser.add_argument("--broker-url", default=harness.BROKER_URL)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs) afterwards")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def record_seconds(record):
    """The migration's started_at -> finished_at, in seconds."""
    started = datetime.datetime.fromisoformat(record["started_at"])
    finished = datetime.datetime.fromisoformat(record["finished_at"])
    return (finished - started).total_seconds()


def other_gap(counters, window):
    """The longest gap (ms) between two counter lines of one file, both
    read within ``window`` (monotonic start, end of the migration): a
    stall of the guest that is not a switch of host (the outage)."""
    gaps = [b[0] - a[0] for a, b in zip(counters, counters[1:],
                                        strict=False)
            if a[1] == b[1] and a[0] >= window[0] and b[0] <= window[1]]
    return max(gaps) * 1000 if gaps else None


def live_row(record, switches, b_console, stall_ms=None):
    """A live run's figures from its record and the consoles' switches
    ([(seconds, counter before, path before, path after)]: A -> the
    temporary domain -> B's ``b_console``); ``stall_ms``: other_gap."""
    if len(switches) != 2 or switches[1][3] != b_console:
        raise ValueError("the guest's output did not go A -> temporary "
                         "domain -> %s: %s" % (b_console, switches))
    live = record["result"]["live"]
    hop_pause, move_pause = switches[0][0] * 1000, switches[1][0] * 1000
    hop_qemu, move_qemu = live["hop"].get("downtime_ms"), \
        live.get("downtime_ms")
    tool = None
    if hop_qemu is not None and move_qemu is not None:
        tool = (hop_pause - hop_qemu) + (move_pause - move_qemu)
    return {"hop_pause_ms": hop_pause, "move_pause_ms": move_pause,
            "outage_ms": hop_pause + move_pause,
            "hop_qemu_ms": hop_qemu, "move_qemu_ms": move_qemu,
            "tool_ms": tool, "stall_ms": stall_ms,
            "total_s": record_seconds(record)}


def warm_row(record, counters, a_console, b_console, window=None):
    """A warm run's figures: ``counters`` [(time, path, counter)] in the
    order read; the outage is A's last line -> B's first."""
    a_last = max((t for t, p, _v in counters if p == a_console),
                 default=None)
    b_first = min((t for t, p, _v in counters if p == b_console),
                  default=None)
    if a_last is None or b_first is None or b_first < a_last:
        raise ValueError("no counter line on A (%s) then on Nova's guest "
                         "(%s)" % (a_console, b_console))
    figures = bench_chain.warm_figures(record["result"])
    return {"outage_ms": (b_first - a_last) * 1000,
            "tool_ms": figures["downtime_s"] * 1000,
            "cutover_ms": figures["cutover_ms"],
            "stall_ms": other_gap(counters, window) if window else None,
            "total_s": record_seconds(record)}


def _median(rows, key):
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else None


def medians(rows):
    return {k: _median(rows, k) for k in rows[0]}


def ratio(live, warm):
    if live is None or not warm:
        return None
    return live / warm


def _f(value, fmt):
    return "-" if value is None else fmt % value


def table(live_rows, warm_rows, cutover_method, cores):
    """The output's lines: each run, the medians, the ratio, what each
    figure is."""
    lm, wm = medians(live_rows), medians(warm_rows)
    out = ["cs2os live vs warm: %d MiB counter guest, %d runs (each: one "
           "live, one warm migration), warm cutover method %s, %d cores; "
           "medians" % (GUEST_MIB, len(live_rows), cutover_method, cores),
           "live     hop pause  move pause     outage  QEMU hop  QEMU move"
           "  tool-added  other gap    total"]

    def live_line(name, r):
        return "%-7s %7s ms %8s ms %8s ms %6s ms %7s ms %8s ms %7s ms " \
            "%6s s" % (
                name, _f(r["hop_pause_ms"], "%.1f"),
                _f(r["move_pause_ms"], "%.1f"), _f(r["outage_ms"], "%.1f"),
                _f(r["hop_qemu_ms"], "%d"), _f(r["move_qemu_ms"], "%d"),
                _f(r["tool_ms"], "%.1f"), _f(r["stall_ms"], "%.1f"),
                _f(r["total_s"], "%.1f"))

    def warm_line(name, r, live):
        return "%-7s %8s ms %8s ms %8s ms %7s ms %6s s %13s" % (
            name, _f(r["outage_ms"], "%.0f"), _f(r["tool_ms"], "%.0f"),
            _f(r["cutover_ms"], "%.0f"), _f(r["stall_ms"], "%.1f"),
            _f(r["total_s"], "%.1f"),
            _f(ratio(live["outage_ms"], r["outage_ms"]), "%.4f"))

    for i, r in enumerate(live_rows, 1):
        out.append(live_line("run %d" % i, r))
    out.append(live_line("median", lm))
    out.append("warm        outage  tool-added     cutover  other gap    "
               "total  outage live/warm")
    for i, (r, live) in enumerate(zip(warm_rows, live_rows, strict=True),
                                  1):
        out.append(warm_line("run %d" % i, r, live))
    out.append(warm_line("median", wm, lm))
    out += [
        "guest outage, live/warm (medians): %s ms / %s ms = %s"
        % (_f(lm["outage_ms"], "%.1f"), _f(wm["outage_ms"], "%.0f"),
           _f(ratio(lm["outage_ms"], wm["outage_ms"]), "%.4f")),
        "pause, outage: the guest's own, between two of its counter lines "
        "as read (1 ms polls; a line every 10 ms); live: hop = A -> the "
        "temporary domain, move = -> Nova's B, outage = both, no reboot; "
        "warm: A's last line (the source stopped) -> Nova's guest's first "
        "(it booted).",
        "other gap: the longest gap between two counter lines of one "
        "console while the migration ran (a stall that is no switch of "
        "host; not in the outage).",
        "QEMU hop/move: QEMU's downtime of each (libvirt's completed job; "
        "A's query-migrate).  cutover: warm's (%s).  total: the record's "
        "started_at -> finished_at."
        % ("stop request -> QEMU's events prove T"
           if cutover_method == states.SHUTDOWN
           else "suspend + end the job"),
        "tool-added: the part of the outage cs2os's own work takes, not "
        "QEMU's migration nor Nova's start and the guest's boot; live: "
        "each pause minus QEMU's downtime, summed; warm: the source stopped "
        "serving -> Nova asked to start the server (the conductor's "
        "record)."]
    return out


# -- the runs ----------------------------------------------------------------


def _watch_from(chain, mid, steps, consoles, timeout=300):
    """Once the migration is at one of ``steps`` (Nova's server exists,
    the guest not yet in its directory): its instance directory watched
    too.  Returns the server id."""
    seen = {}

    def reached():
        seen["m"] = chain.api.get_migration(chain.ctxt, mid)
        return seen["m"]["step"] in steps or \
            seen["m"]["state"] in bench_chain.FINAL

    harness.wait_for(reached, timeout, "step %s" % (steps,), interval=0.05)
    m = seen["m"]
    server_id = (m["resources"] or {}).get("server_id")
    if m["step"] not in steps or not server_id:
        raise RuntimeError("migration %s %s at %s before %s: %s" % (
            mid, m["state"], m["step"], steps, m["error"]))
    consoles.add_dir(os.path.join(chain.minicloud.instances_path,
                                  server_id))
    return server_id


def _guest(chain, template_of):
    volume = live_kvm.make_live_volume(chain.cs_root,
                                       same_template_as=template_of)
    vm = chain.boot_vm(volume)
    chain.vm_ids.append(vm.id)
    vm.volume = volume
    vm.console = chain.cloud.kvm.console(vm.instancename)
    return vm


def _migrate_watched(chain, vm, steps, after, **request):
    """Migrate ``vm`` while its consoles are read; ``after(consoles,
    b_console)`` waits for what the run needs of Nova's guest."""
    consoles = live_consoles.Consoles(vm.console)
    consoles.start()
    try:
        consoles.wait_beyond(20)  # the counter runs
        time.sleep(SETTLE_SECONDS)
        began = time.monotonic()
        mid = chain.start_migration(vm, **request)["id"]
        server_id = _watch_from(chain, mid, steps, consoles)
        done = chain.wait_done(mid)
        done["window"] = (began, time.monotonic())
        b_console = os.path.join(chain.minicloud.instances_path, server_id,
                                 "console.log")
        after(consoles, b_console)
    finally:
        consoles.stop()
    return done, consoles, b_console


def live_run(chain, template_of):
    vm = _guest(chain, template_of)
    done, consoles, b_console = _migrate_watched(
        chain, vm, LIVE_WATCH_STEPS,
        lambda c, _b: c.wait_beyond(c.last() + 50, timeout=10),
        mode=states.LIVE)
    consoles.assert_continuous()  # no reboot, no counter lost
    row = live_row(done, consoles.switches(), b_console,
                   other_gap(consoles.counters(), done["window"]))
    print("run: live  %s" % consoles.describe(), flush=True)
    chain.delete_server(done["result"]["server_id"])
    return vm.volume, row


def _b_counter(consoles, b_console, timeout=120):
    harness.wait_for(lambda: any(
        p == b_console for _t, p, _v in consoles.counters()), timeout,
        "a counter line of Nova's guest in %s" % b_console, interval=0.05)


def warm_run(chain, template_of, cutover_method):
    vm = _guest(chain, template_of)
    done, consoles, b_console = _migrate_watched(
        chain, vm, WARM_WATCH_STEPS, lambda c, b: _b_counter(c, b),
        mode=states.WARM, cutover_method=cutover_method)
    row = warm_row(done, consoles.counters(), vm.console, b_console,
                   done["window"])
    chain.delete_server(done["result"]["server_id"])
    return row


def sweep_domains(vm_ids):
    """A hop's temporary domain (A's UUID) left on the main libvirtd by a
    failed run: destroyed.  (The KVM host's go with its libvirtd.)"""
    conn = libvirt.open(harness.LIBVIRT_URI)
    try:
        for dom in conn.listAllDomains(0):
            if dom.UUIDString() in vm_ids:
                print("cleanup: destroying domain %s" % dom.name(),
                      file=sys.stderr)
                try:
                    dom.destroy()
                    if dom.isPersistent():
                        dom.undefine()
                except libvirt.libvirtError as exc:
                    print("cleanup: %s" % exc, file=sys.stderr)
    finally:
        conn.close()


def bench(args):
    run_id = uuid.uuid4().hex[:8]
    work = tempfile.mkdtemp(prefix="cs2os-bench-%s-" % run_id, dir="/var/tmp")
    os.chmod(work, 0o755)  # noqa: S103 - qemu runs as libvirt-qemu
    chain = bench_chain.Chain(work, run_id, args.broker_url,
                              offering_memory=GUEST_MIB,
                              offering_name="tiny", live_host=True)
    chain.vm_ids = []
    live_rows, warm_rows = [], []
    try:
        chain.start()
        template_of = None
        for run in range(args.runs):
            volume, row = live_run(chain, template_of)
            template_of = template_of or volume  # one template, one image
            live_rows.append(row)
            print("run %d: live: pause hop %.1f ms, move %.1f ms (outage "
                  "%.1f ms); QEMU downtime hop %s ms, move %s ms; "
                  "tool-added %s ms; other gap %s ms; total %.1f s" % (
                      run + 1, row["hop_pause_ms"], row["move_pause_ms"],
                      row["outage_ms"], row["hop_qemu_ms"],
                      row["move_qemu_ms"], _f(row["tool_ms"], "%.1f"),
                      _f(row["stall_ms"], "%.1f"), row["total_s"]),
                  flush=True)
            row = warm_run(chain, template_of, args.cutover_method)
            warm_rows.append(row)
            print("run %d: warm: outage %.0f ms (A's last counter line -> "
                  "Nova's guest's first); tool-added %.0f ms; cutover "
                  "%.0f ms; other gap %s ms; total %.1f s" % (
                      run + 1, row["outage_ms"], row["tool_ms"],
                      row["cutover_ms"], _f(row["stall_ms"], "%.1f"),
                      row["total_s"]), flush=True)
        return live_rows, warm_rows
    finally:
        chain.stop()
        sweep_domains(chain.vm_ids)
        if args.keep:
            print("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    args = parse_args(argv)
    virt.init()
    live_rows, warm_rows = bench(args)
    print()
    print("\n".join(table(live_rows, warm_rows, args.cutover_method,
                          os.cpu_count())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"live": live_rows, "warm": warm_rows,
                       "median": {"live": medians(live_rows),
                                  "warm": medians(warm_rows)}}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
