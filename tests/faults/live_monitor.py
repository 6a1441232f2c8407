"""Invariant 1 for live mode: one running copy of the guest at every
moment, across both libvirtds.

A live migration's guest runs in one of three domains: A (the CloudStack
VM, on the KVM host's libvirtd), the temporary ``cs2os-live-<id>`` domain
after the hop, and Nova's domain B after the move (both on the main
libvirtd).  Every ~20 ms the monitor asks libvirt which of them is
RUNNING (a migration's other side is paused or not yet defined) and
records every sample where two ran at once, and every one where A ran
after the record says committed.  B runs "the guest" once T is its disk
(the record says swapped or committed); before that Nova boots the
template in it (the boot step), which is not a copy of the guest.

Libvirt answers one domain at a time, so the order of the questions
matters: the guest leaves a domain (paused) before the next one runs,
and asking the destination first never sees a hand-over as an overlap,
while a real overlap is seen all the same.  Forward the guest goes
A -> temporary -> B: B, then the temporary domain, then A.  In a
rollback it goes temporary -> A: A first, then the temporary domain.
"""

import sqlite3

import libvirt

from tests.faults import invariants

BEFORE_TARGET = ("validate", "image", "ports", "boot")


class LiveMoveMonitor(invariants.LiveCopyMonitor):
    """``kvm_uri``: the KVM host's libvirtd (A, by name); ``temp_name``:
    the hop's domain; ``on_server(server_id)``: called once the record is
    past the boot step (Nova's boot of the template printed what it
    prints by then), before the hop: the test follows the server's
    console files from then on."""

    def __init__(self, db_path, migration_id, instance_name,
                 instances_path, kvm_uri, temp_name, on_server=None,
                 interval=0.02):
        super().__init__(db_path, migration_id, instance_name,
                         instances_path, interval=interval)
        self.kvm_uri = kvm_uri
        self.temp_name = temp_name
        self.on_server = on_server
        self.seen = {"source running": 0, "temporary running": 0,
                     "nova running": 0, "nova has guest": 0}

    def _loop(self):
        main = libvirt.open(self.uri)
        kvm = libvirt.open(self.kvm_uri)
        server_id, record = None, None
        try:
            while not self._stop.is_set():
                try:
                    record = invariants.read_record(
                        self.db_path, self.migration_id,
                        events=False) or record
                except sqlite3.OperationalError:
                    pass
                resources = (record or {}).get("resources") or {}
                if resources.get("server_id"):
                    server_id = resources["server_id"]
                    self.server_ids.add(server_id)
                    if record["step"] not in BEFORE_TARGET and \
                            self.on_server is not None:
                        self.on_server(server_id)
                        self.on_server = None
                committed = bool(record and (record["committed"]
                                             or resources.get("committed")))
                has_guest = bool(committed or resources.get("swapped"))
                back = bool(record and record["state"] == "rolling_back")
                self._sample(main, kvm, server_id, has_guest, committed,
                             back, record)
                self._stop.wait(self.interval)
        except Exception as exc:  # noqa: BLE001 - reported by assert_held
            self.error = exc
        finally:
            main.close()
            kvm.close()

    def _runs(self, conn, lookup, key):
        return self._running(self._lookup(getattr(conn, lookup), key))

    def _sample(self, main, kvm, server_id, has_guest, committed, back,
                record):
        if back:  # temporary -> A: the destination, A, first
            a = self._runs(kvm, "lookupByName", self.instance_name)
            temp = self._runs(main, "lookupByName", self.temp_name)
            b = bool(server_id) and self._runs(
                main, "lookupByUUIDString", server_id)
        else:  # A -> temporary -> B: B, the temporary domain, then A
            b = bool(server_id) and self._runs(
                main, "lookupByUUIDString", server_id)
            temp = self._runs(main, "lookupByName", self.temp_name)
            a = self._runs(kvm, "lookupByName", self.instance_name)
        self.samples += 1
        self.seen["source running"] += a
        self.seen["temporary running"] += temp
        self.seen["nova running"] += b
        self.seen["nova has guest"] += has_guest
        copies = [name for name, runs in (
            ("CloudStack domain %s" % self.instance_name, a),
            ("temporary domain %s" % self.temp_name, temp),
            ("Nova server %s" % server_id, b and has_guest)) if runs]
        step = record and "%s/%s" % (record["state"], record["step"])
        if len(copies) > 1:
            self.violations.append(invariants.broken(1, (
                "at sample %d (%s) %s ran the guest at once"
                % (self.samples, step, " and ".join(copies)))))
        if a and committed:
            self.violations.append(invariants.broken(1, (
                "at sample %d (%s) CloudStack domain %s ran after the "
                "commit" % (self.samples, step, self.instance_name))))
