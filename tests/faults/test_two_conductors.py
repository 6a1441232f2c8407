"""Two conductors on one database: the one that was paused past its lease
must not act again once the other took its migration over (invariant 3).

Both conductors share one MariaDB database ([database] connection: a
SQLite file has one conductor, the second would refuse to start), have
lease_seconds = 10 (the option's minimum), different host names, and each
its own CloudStack account, so every CloudStack call says which conductor
made it.  A cold migration with a slow copy (a dedicated agent at 80
Mbit/s, ~150 MiB written in the overlay: ~15 s of sync) is claimed by one
of them; that one is SIGSTOPped mid-sync, the other takes over (the
record's conductor changes, its lease epoch grows) and finishes it; then
the first is SIGCONTed: it must do nothing more.
"""

import collections
import os
import signal
import threading
import time

import oslo_messaging as messaging
import pytest

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from tests.e2e.conftest import conductor_sections
from tests.e2e.conftest import new_vm
from tests.faults import chaos
from tests.faults import invariants
from tests.faults import report
from tools.testbed import agent_process
from tools.testbed import cloudstack_handlers
from tools.testbed import conductor_process
from tools.testbed import harness as ft
from tools.testbed import images
from tools.testbed import mariadb
from tools.testbed import process

MiB = images.MiB
RUN_ID = ft.RUN_ID
STATE_CHANGING = ("stopVirtualMachine", "startVirtualMachine",
                  "destroyVirtualMachine", "unmanageVirtualMachine")
LEASE = 10


@pytest.fixture(scope="module")
def agent(workdir, services, agent_api, minicloud,  # noqa: F811
          cloudstack_root):
    """The e2e agent, slower: 80 Mbit/s (10 MB/s) per copy."""
    proc = agent_process.AgentProcess(
        workdir, minicloud.compute_host, ft.TRANSPORT_URL,
        services["exchange"], minicloud.instances_path,
        [os.path.join(cloudstack_root, "mnt")], max_bandwidth_mbps=80)
    proc.start(agent_api, cs2os_context.get_admin_context())
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def database_url(workdir):
    server = mariadb.MariaDBServer(workdir)
    server.start()
    yield server.create_database("faults_two_%s" % RUN_ID)
    server.stop()


@pytest.fixture(scope="module")
def conductors(workdir, services, cloud, minicloud, agent,  # noqa: F811
               conductor_api, cloudstack_root, database_url):
    spool = os.path.join(workdir, "spool-faults-two")
    os.makedirs(spool, exist_ok=True)
    procs = []
    for letter in ("a", "b"):
        account = cloud.add_account("cs2os-faults-%s-%s" % (RUN_ID, letter))
        host = "cs2os-faults-%s-conductor-%s" % (RUN_ID, letter)
        proc = conductor_process.ConductorProcess(
            workdir, host, ft.TRANSPORT_URL, services["exchange"],
            database_url, "notifications-faults-%s" % RUN_ID,
            lease_seconds=LEASE,
            sections=conductor_sections(cloud, minicloud, cloudstack_root,
                                        spool, account=account))
        proc.account = account
        procs.append(proc)
    procs[0].manage("db", "sync")
    for proc in procs:
        proc.start()
    yield {p.host: p for p in procs}
    for proc in procs:
        if proc.proc is not None and proc.proc.poll() is None:
            os.kill(proc.proc.pid, signal.SIGCONT)
    # Both at once: each may take its stop_timeout (a flow blocked in an
    # agent call), and there is no reason to wait for one, then the other.
    process.stop_together(procs)


class CallLog:
    """Every CloudStack call the stand-in answers, with the account that
    signed it (the stand-in's own log hides the api key)."""

    def __init__(self, monkeypatch):
        self.calls = []  # (monotonic time, account name, command, vm id)
        self._lock = threading.Lock()
        for name, handler in list(cloudstack_handlers.HANDLERS.items()):
            monkeypatch.setitem(cloudstack_handlers.HANDLERS, name,
                                self._wrap(name, handler))

    def _wrap(self, name, handler):
        def recorded(cloud, caller, params):
            with self._lock:
                self.calls.append((time.monotonic(), caller.name, name,
                                   params.get("id")))
            return handler(cloud, caller, params)
        recorded.admin_only = handler.admin_only
        return recorded

    def by(self, account, since=0.0, commands=None):
        with self._lock:
            return [c for c in self.calls if c[1] == account
                    and c[0] >= since
                    and (commands is None or c[2] in commands)]


def test_paused_conductor_is_fenced_after_takeover(
        conductors, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        agent, workdir, monkeypatch, database_url):
    started = time.monotonic()
    calls = CallLog(monkeypatch)
    # ~150 MiB of the overlay's own data: ~15 s at 10 MB/s.
    vm = new_vm(cloud, cloudstack_root,
                writes=((0x5A, 4 * MiB, 150 * MiB),),
                template_size=256 * MiB)
    digest = images.sha256(vm.volume.overlay)
    # The record, read from the shared database (invariants.read_record).
    db_path = database_url
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    mid = created["id"]
    quick_api = conductor_rpcapi.ConductorAPI(timeout=3)
    held, outcome, note = False, "?", ""
    monitor = invariants.LiveCopyMonitor(db_path, mid, vm.instancename,
                                         minicloud.instances_path)
    try:
        with monitor:
            # Mid-copy: the agent has reported some progress.
            first = invariants.wait_record(
                db_path, mid, lambda r: r["step"] == "sync"
                and r["bytes_done"] > 0, "the copy under way", timeout=300)
            stale = conductors[first["conductor"]]
            winner = next(p for p in conductors.values() if p is not stale)
            os.kill(stale.proc.pid, signal.SIGSTOP)
            paused_at = time.monotonic()
            try:
                taken = invariants.wait_record(
                    db_path, mid, lambda r: r["conductor"] == winner.host,
                    "the takeover", timeout=LEASE * 4)
                takeover_s = time.monotonic() - paused_at
                assert taken["lease_epoch"] > first["lease_epoch"]
                assert taken["step"] in ("sync", "swap", "start"), \
                    taken["step"]
                # Reads while one conductor is still paused: an RPC call
                # the broker hands to the paused one times out.  After the
                # takeover check: with the fixture's 30 s timeout, reads
                # before it once outlasted the rest of the copy, and the
                # record was first seen taken over at step "done".
                reads = collections.Counter()
                for _ in range(6):
                    try:
                        quick_api.get_migration(ctxt, mid)
                        reads["answered"] += 1
                    except messaging.MessagingTimeout:
                        reads["timed out"] += 1
                final = invariants.wait_final(db_path, mid)
                outcome = final["state"]
                assert final["state"] == "succeeded", (
                    final["error"], final["events"])
            finally:
                resumed_at = time.monotonic()
                os.kill(stale.proc.pid, signal.SIGCONT)
            # Long enough for its renewer (every LEASE/3 s) and its flow
            # (blocked in the agent call when paused) to wake.
            invariants.wait_record(
                db_path, mid, lambda r: "no longer holds" in stale.log(),
                "the stale conductor to see it lost the claim",
                timeout=LEASE * 3)
            time.sleep(LEASE / 2)
        after = invariants.read_record(db_path, mid)
        note = invariants.check_final(after, cloud, minicloud, vm, workdir,
                                      overlay_digest=digest,
                                      monitor=monitor)
        # Invariant 3, by its effects.
        acted = calls.by(stale.account.name, since=resumed_at,
                         commands=STATE_CHANGING)
        invariants.require(not acted, 3, "the stale conductor %s changed "
                           "CloudStack after it lost the claim: %s"
                           % (stale.host, acted))
        all_after = calls.by(stale.account.name, since=resumed_at)
        invariants.require(
            (after["state"], after["conductor"], after["lease_epoch"])
            == (final["state"], winner.host, final["lease_epoch"]), 3,
            "the record changed after the stale conductor woke: %s/%s/%s "
            "then %s/%s/%s" % (final["state"], final["conductor"],
                               final["lease_epoch"], after["state"],
                               after["conductor"], after["lease_epoch"]))
        invariants.require(after["events"] == final["events"], 3,
                           "events were added after the stale conductor "
                           "woke: %s" % after["events"][len(final["events"]):])
        done = collections.Counter(e["step"] for e in after["events"]
                                   if e["message"] == "done")
        invariants.require(all(n == 1 for n in done.values()), 3,
                           "a step was done twice: %s" % done)
        agent_log = agent.log()
        server_id = after["resources"]["server_id"]
        swaps = agent_log.count("Instance %s: staged overlay swapped in"
                                % server_id)
        copies = agent_log.count("Migration %s: staging" % mid)
        invariants.require(swaps == 1 and copies == 1, 3,
                           "the agent swapped %d times and started %d "
                           "copies for migration %s" % (swaps, copies, mid))
        # The stale conductor knows it lost the migration.
        assert "no longer holds migration %s" % mid in stale.log()
        assert stale.proc.poll() is None, "the stale conductor died"
        held = True
        print("\n[two conductors] %s paused mid-sync; %s took over after "
              "%.1f s (epoch %d -> %d) and finished; after SIGCONT the "
              "stale one made %d CloudStack calls (%d state-changing); "
              "reads while paused: %s"
              % (stale.host, winner.host, takeover_s,
                 first["lease_epoch"], final["lease_epoch"],
                 len(all_after), len(acted), dict(reads)))
    finally:
        report.record("conductor SIGSTOP mid-sync", "cold",
                      "two conductors", outcome,
                      time.monotonic() - started, held,
                      "" if held else note,
                      expected=(outcome == "succeeded") if outcome != "?"
                      else None)
        chaos.delete_servers(minicloud, mid)
        chaos.stop_source_vm(cloud, vm)
