"""The safety promise, checked on real processes.

The invariants (numbered as the conductor's safety promise):

1 one live copy: at most one of {CloudStack VM, Nova server} runs the
  guest; after the commit the CloudStack VM is never started again.
2 no lost disk: before the commit Nova's original disk and the CloudStack
  overlay are intact; after it the migrated disk is never replaced or
  deleted; cs2os never writes the overlay.
3 one actor: one conductor acts on a migration at a time (fencing by
  lease epoch; a conductor that lost its claim stops without acting).
4 a rollback interrupted by a crash resumes as a rollback.
5 one active migration per CloudStack VM.
6 the source stays stopped: a source started again before the commit
  fails the migration before the commit.

``LiveCopyMonitor`` watches invariant 1 while a migration runs (libvirt,
every ~50 ms); ``check_final`` checks a finished migration against the
real world: CloudStack (the stand-in), Nova, Neutron, the disks.
Every failure is an AssertionError that names the invariant.
"""

import json
import os
import sqlite3
import subprocess
import threading
import time
import uuid

import libvirt

from cs2os_agent import qemu_img
from tests.faults import records
from tools.testbed import harness as ft
from tools.testbed import warm_chain

NAMES = {
    1: "one live copy",
    2: "no lost disk",
    3: "one actor",
    4: "a rollback resumes as a rollback",
    5: "one active migration per VM",
    6: "the source stays stopped",
}
FINAL = ("succeeded", "failed", "cancelled")


def broken(number, message):
    return AssertionError("invariant %d (%s) broken: %s"
                          % (number, NAMES[number], message))


def require(condition, number, message):
    if not condition:
        raise broken(number, message)


# -- the record, straight from the conductor's database (read-only) ----------

_JSON = ("source", "resources", "result", "options")


def read_record(db_path, migration_id, events=True):
    """The migration's row as a dict (JSON columns decoded), or None.

    ``db_path``: a SQLite file, or a database server's URL (records.py).
    Read-only, so it works while the conductor is dead or paused."""
    if records.is_url(db_path):
        return records.read_record(db_path, migration_id, events)
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True,
                           timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM migrations WHERE id = ?",
                           (migration_id,)).fetchone()
        if row is None:
            return None
        record = dict(row)
        for key in _JSON:
            if isinstance(record.get(key), str):
                record[key] = json.loads(record[key])
            record[key] = record.get(key) or {}
        record["committed"] = bool(record.get("committed"))
        if events:
            record["events"] = [dict(e) for e in conn.execute(
                "SELECT created_at, step, kind, message FROM "
                "migration_events WHERE migration_id = ? ORDER BY id",
                (migration_id,))]
        return record
    finally:
        conn.close()


def wait_record(db_path, migration_id, predicate, what, timeout=300,
                interval=0.2):
    """Poll the database until ``predicate(record)``; return the record."""
    deadline = time.monotonic() + timeout
    record = None
    while True:
        try:
            record = read_record(db_path, migration_id)
        except sqlite3.OperationalError:
            record = None  # locked for a moment: try again
        if record is not None and predicate(record):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(
                "migration %s never reached %s; it is %s at %s: %s"
                % (migration_id, what,
                   record and record["state"], record and record["step"],
                   record and record["events"][-4:]))
        time.sleep(interval)


def wait_final(db_path, migration_id, timeout=420):
    return wait_record(db_path, migration_id,
                       lambda r: r["state"] in FINAL, "a final state",
                       timeout)


# -- invariant 1 while it runs ------------------------------------------------


class LiveCopyMonitor:
    """Polls libvirt every ``interval`` s: the CloudStack VM's domain (by
    instance name) and the Nova server's (by the server's uuid, from the
    record), and records every moment both run the guest, and every moment
    the CloudStack domain runs after the record says committed.

    The Nova server runs "the guest" once the migrated disk is in it: the
    record says swapped or committed, or the agent's kept original
    (disk.cs2os-orig) is in its instance directory.  Before that it boots
    the template only (the boot step), which is not a second copy.
    """

    def __init__(self, db_path, migration_id, instance_name,
                 instances_path, interval=0.05, uri=ft.LIBVIRT_URI):
        self.db_path = db_path
        self.migration_id = migration_id
        self.instance_name = instance_name
        self.instances_path = instances_path
        self.interval = interval
        self.uri = uri
        self.violations = []
        self.samples = 0
        self.seen = {"source running": 0, "nova running": 0,
                     "nova has guest": 0}
        self.server_ids = set()
        self._stop = threading.Event()
        self._thread = None
        self.error = None

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="live-copy-monitor")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    @staticmethod
    def _running(dom):
        try:
            return dom is not None and \
                dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        except libvirt.libvirtError:
            return False  # a transient domain that ended is gone

    def _loop(self):
        conn = libvirt.open(self.uri)
        server_id = None
        record = None
        try:
            while not self._stop.is_set():
                try:
                    record = read_record(self.db_path, self.migration_id,
                                         events=False) or record
                except sqlite3.OperationalError:
                    pass
                resources = (record or {}).get("resources") or {}
                if resources.get("server_id"):
                    server_id = resources["server_id"]
                    self.server_ids.add(server_id)
                committed = bool(record and (record["committed"]
                                             or resources.get("committed")))
                source = self._lookup(conn.lookupByName, self.instance_name)
                nova = server_id and self._lookup(conn.lookupByUUIDString,
                                                  server_id)
                src_run, nova_run = self._running(source), \
                    self._running(nova)
                has_guest = committed or resources.get("swapped") or (
                    server_id and os.path.exists(os.path.join(
                        self.instances_path, server_id, "disk.cs2os-orig")))
                self.samples += 1
                self.seen["source running"] += src_run
                self.seen["nova running"] += bool(nova_run)
                self.seen["nova has guest"] += bool(has_guest)
                now = time.strftime("%H:%M:%S")
                step = record and "%s/%s" % (record["state"], record["step"])
                if src_run and nova_run and has_guest:
                    self.violations.append(broken(1, (
                        "at %s (%s) CloudStack domain %s and Nova server %s "
                        "both ran the guest" % (now, step,
                                                self.instance_name,
                                                server_id))))
                if src_run and committed:
                    self.violations.append(broken(1, (
                        "at %s (%s) CloudStack domain %s ran after the "
                        "commit" % (now, step, self.instance_name))))
                self._stop.wait(self.interval)
        except Exception as exc:  # noqa: BLE001 - reported by assert_held
            self.error = exc
        finally:
            conn.close()

    @staticmethod
    def _lookup(fn, key):
        try:
            return fn(key)
        except libvirt.libvirtError:
            return None

    def assert_held(self):
        if self.error is not None:
            raise AssertionError("the live-copy monitor failed: %r"
                                 % self.error)
        assert self.samples > 0, "the live-copy monitor never sampled"
        if self.violations:
            first = self.violations[0]
            raise AssertionError("%s (%d samples of %d)"
                                 % (first, len(self.violations),
                                    self.samples))


# -- the final state ----------------------------------------------------------


def _overlay_intact(vm, digest, workdir):
    """qemu-img check of the overlay: of a copy rebased onto the local
    template (its header names the KVM host's /mnt path, not here)."""
    copy = warm_chain.source_view(vm.volume, os.path.join(
        workdir, "faults-check-%s.qcow2" % uuid.uuid4().hex))
    try:
        proc = subprocess.run(["qemu-img", "check", "-f", "qcow2", copy],
                              capture_output=True, text=True)
    finally:
        os.unlink(copy)
    # 0: clean; 3: leaked clusters only (no data harmed).
    require(proc.returncode in (0, 3), 2, "the CloudStack overlay %s "
            "fails qemu-img check (exit %d): %s"
            % (vm.volume.overlay, proc.returncode,
               (proc.stdout + proc.stderr).strip()[-400:]))
    if digest is not None:
        from tools.testbed import images

        now = images.sha256(vm.volume.overlay)
        require(now == digest, 2, "the CloudStack overlay %s changed "
                "(sha256 %s, was %s)" % (vm.volume.overlay, now, digest))


def _migrated_disk(minicloud, server_id, vm, workdir):
    """The server's disk shows the guest what the source's chain does."""
    disk = os.path.join(minicloud.instances_path, server_id, "disk")
    require(os.path.exists(disk), 2, "server %s has no disk %s"
            % (server_id, disk))
    view = warm_chain.source_view(vm.volume, os.path.join(
        workdir, "faults-view-%s.qcow2" % uuid.uuid4().hex))
    try:
        qemu_img.compare(view, disk, "qcow2", "qcow2", force_share=True)
    except Exception as exc:  # noqa: BLE001 - named below
        raise broken(2, "Nova server %s's disk is not the CloudStack VM's "
                     "disk: %s" % (server_id, exc)) from None
    finally:
        os.unlink(view)


def ours_in_nova(minicloud, migration_id):
    """Servers and ports of this migration left in Nova / Neutron."""
    conn = minicloud.conn
    servers = [s.id for s in conn.compute.servers(all_projects=True)
               if (s.metadata or {}).get("cs2os_migration_id")
               == migration_id]
    prefix = "cs2os-%s-nic" % migration_id
    ports = [p.id for p in conn.network.ports()
             if (p.name or "").startswith(prefix)]
    return servers, ports


def _events_after_rollback_began(record):
    """Forward steps recorded done after the first rollback event."""
    events = record["events"]
    first = next((i for i, e in enumerate(events)
                  if e["kind"] == "rollback" or e["step"] == "rollback"),
                 None)
    if first is None:
        return []
    return [e for e in events[first:] if e["message"] == "done"]


def check_final(record, cloud, minicloud, vm, workdir, ran_before=True,
                overlay_digest=None, monitor=None):
    """Check a finished migration; returns a one-line description.

    ``record``: the final record (with events); ``cloud``: the CloudStack
    stand-in; ``vm``: its VM (with .volume); ``ran_before``: the VM ran
    when the migration began; ``overlay_digest``: the overlay's sha256
    before (checked unchanged) when the guest does not write to it.
    """
    mid = record["id"]
    state = record["state"]
    assert state in FINAL, "migration %s is %s, not final" % (mid, state)
    resources, result = record["resources"], record["result"]
    committed = record["committed"] or bool(resources.get("committed"))
    if monitor is not None:
        monitor.stop()
        monitor.assert_held()
    require(record.get("active_source") is None, 5,
            "final migration %s still holds active_source %s"
            % (mid, record.get("active_source")))
    source_runs = cloud.kvm.is_running(vm.instancename)
    _overlay_intact(vm, overlay_digest, workdir)
    if committed:
        require(state != "cancelled", 1, "migration %s is committed and "
                "cancelled" % mid)
        require(not any(e["message"].startswith("started CloudStack VM")
                        for e in record["events"]), 1,
                "migration %s started the CloudStack VM after its commit: %s"
                % (mid, [e["message"] for e in record["events"]]))
        require(not source_runs, 1, "CloudStack VM %s runs although "
                "migration %s is committed" % (vm.name, mid))
        require(not result.get("rolled_back"), 2, "committed migration "
                "%s rolled back %s" % (mid, result.get("rolled_back")))
        server_id = resources.get("server_id")
        require(server_id, 2, "committed migration %s names no server"
                % mid)
        server = minicloud.conn.compute.get_server(server_id)
        if state == "succeeded":
            require(server.status == "ACTIVE", 2, "server %s is %s after "
                    "success" % (server_id, server.status))
        _migrated_disk(minicloud, server_id, vm, workdir)
        return "committed: server %s %s on the migrated disk" % (
            server_id, server.status)
    require(state != "succeeded", 2, "migration %s succeeded without a "
            "commit" % mid)
    # Rolled back (or never began): the guest is CloudStack's again.
    if "rollback_of" in result:
        require(result["rollback_of"]["state"] == state, 4,
                "migration %s ended %s but its rollback was for %s"
                % (mid, state, result["rollback_of"]))
    forward = _events_after_rollback_began(record)
    require(not forward, 4, "migration %s resumed its forward flow after "
            "its rollback began: %s" % (mid, forward))
    if ran_before:
        state_cs = cloud.vm_state(vm)
        require(source_runs and state_cs == "Running", 1,
                "CloudStack VM %s is %s (domain running: %s) after "
                "migration %s ended %s: the guest runs nowhere"
                % (vm.name, state_cs, source_runs, mid, state))
        dom = libvirt.open(ft.LIBVIRT_URI)
        try:
            paused = dom.lookupByName(vm.instancename).state()[0] != \
                libvirt.VIR_DOMAIN_RUNNING
        finally:
            dom.close()
        require(not paused, 1, "CloudStack domain %s is not running "
                "(paused?) after the rollback" % vm.instancename)
    servers, ports = ours_in_nova(minicloud, mid)
    require(not servers, 2, "rolled-back migration %s left Nova servers "
            "%s" % (mid, servers))
    require(not ports, 2, "rolled-back migration %s left Neutron ports %s"
            % (mid, ports))
    return "rolled back: %s" % "; ".join(result.get("rolled_back") or [])
