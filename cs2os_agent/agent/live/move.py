"""The same-host move: A's running state into Nova's domain B.

Both domains are on the libvirtd of the Nova compute host (across hosts,
A gets there first by libvirt's own live migration under a temporary
name).  A must already run on B's disk file (a block copy pivoted onto
it): the disk is shared, so it is exactly A's at the switch-over
(recipes/live-into-nova).  The order:

1. preflight (:mod:`.preflight`): nothing has changed if it refuses;
2. a FIFO, and the relay (:mod:`.relay`) writing the save-image header
   (B's live XML, :mod:`.abi`) into it;
3. ``virDomainRestore`` of the FIFO, on a thread: libvirt reads the
   header and starts B's QEMU waiting for its stream; B shows ``paused
   (starting up)`` and emits no event yet.  ``before_stream`` runs now
   (the conductor will set Nova's server ACTIVE here);
4. QMP ``migrate`` on A to the relay's socket; A's ``query-migrate``
   gives QEMU's downtime;
5. the restore returns and B is running: only now is A destroyed.

Never two live copies, and never a guest resumed behind the other's back:

- B failed to load (A's QEMU reports ``completed`` even then): A never
  stopped being the guest; it is resumed, B is destroyed if libvirt left
  it up, and the move raises :class:`errors.LiveMoveFailed`;
- B loaded (the restore returned success, or B runs although it did
  not say so): B has run guest code on the shared disk, so A is never
  resumed again; if B is not running or A cannot be destroyed,
  :class:`errors.LiveMoveIncomplete` says which domain holds the guest.

libvirtd restarted meanwhile (:mod:`.reconnect`): the agent's
connection is dead, so the undo and the finish first reopen it and look
A and B up again by UUID.  The new libvirtd has killed B if it still
waited for its stream (B never ran), and A's stream, cut with it, fails
on A, which QEMU resumes: the undo ends as above, A runs, B shut off.

The QMP commands go through libvirt (``qemuMonitorCommand``): libvirt
marks A tainted (custom-monitor); A is destroyed right after, or resumed
after a failure tainted but unchanged otherwise.
"""

import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time

import libvirt
import libvirt_qemu
from oslo_log import log as logging

from cs2os_agent import virt
from cs2os_agent.agent.live import abi
from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import header
from cs2os_agent.agent.live import preflight
from cs2os_agent.agent.live import reconnect
from cs2os_agent.agent.live import relay as relay_mod

_message = errors.libvirt_message

LOG = logging.getLogger(__name__)

POLL = 0.01
# QEMU 7.2 limits a migration to 32 MiB/s unless told otherwise; on one
# host nothing is gained by a limit (1 TiB/s: unlimited in effect).
MAX_BANDWIDTH = 1 << 40
# How long the undo waits for libvirt's restore to give up once the
# stream is closed.
UNDO_WAIT = 30
_SECURE = libvirt.VIR_DOMAIN_XML_SECURE


@dataclasses.dataclass(frozen=True)
class MoveResult:
    downtime_ms: object  # QEMU's downtime, from A's query-migrate
    migration_ms: object  # QEMU's total migration time
    switch_seconds: float  # migrate sent -> B running
    stream_bytes: int
    preflight: preflight.Report


class _Failed(Exception):
    pass


def qmp(dom, command, **arguments):
    """A QMP command on ``dom``'s QEMU through libvirt; its ``return``."""
    request = {"execute": command}
    if arguments:
        request["arguments"] = arguments
    try:
        reply = json.loads(libvirt_qemu.qemuMonitorCommand(
            dom, json.dumps(request), 0))
    except libvirt.libvirtError as exc:
        raise _Failed("QMP %s on %s: %s" % (command, dom.name(),
                                            _message(exc))) from None
    if "error" in reply:
        raise _Failed("QMP %s on %s: %s" % (command, dom.name(),
                                            reply["error"].get("desc")))
    return reply.get("return")


def qemu_owner(dom):
    """(uid, gid) A's QEMU runs as (its DAC label), or None."""
    for label in virt.domain_xml(dom).findall(
            "./seclabel[@model='dac']/label"):
        uid, sep, gid = (label.text or "").replace("+", "").partition(":")
        if sep and uid.isdigit() and gid.isdigit():
            return int(uid), int(gid)
    return None


class _Restore(threading.Thread):
    """``virDomainRestore`` of the FIFO; it returns once B runs.

    On a connection of its own: while one thread of a libvirt client
    waits in a long call, another thread's call on the same connection
    can wait for ever for its reply (seen here: A's QMP ``migrate`` never
    sent while the restore waited for the stream, a deadlock).
    """

    def __init__(self, uri, path):
        super().__init__(name="live-restore", daemon=True)
        try:
            self.conn = virt.open(uri)
        except libvirt.libvirtError as exc:
            raise errors.LiveMoveRefused(
                reason="cannot open a libvirt connection for the restore: "
                "%s" % _message(exc)) from None
        self.path = path
        self.error = None
        self.ok = False

    def run(self):
        try:
            self.conn.restoreFlags(self.path, None, 0)
            self.ok = True
        except libvirt.libvirtError as exc:
            self.error = _message(exc)
        finally:
            virt.close_quietly(self.conn)


def move(conn, source, target, run_root, live_xml=None, timeout=120,
         before_stream=None, stream_limit=None, stream_rate=None):
    """Move running ``source`` (A) into shut-off ``target`` (B).

    ``live_xml``: B's live XML; by default built from A's migratable XML
    and B's persistent one.  ``stream_limit``, ``stream_rate``: fault
    injection for tests (:class:`.relay.Relay`).  Returns a
    :class:`MoveResult`.
    """
    try:
        a_live = source.XMLDesc(_SECURE)
        a_migratable = source.XMLDesc(
            _SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        nova_xml = target.XMLDesc(_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
    except libvirt.libvirtError as exc:
        raise errors.LiveMoveRefused(
            reason="cannot read the domains' XML: %s"
            % _message(exc)) from None
    if live_xml is None:
        live_xml = abi.live_xml(a_migratable, nova_xml)
    cookie = abi.cookie(a_live)
    run_dir = tempfile.mkdtemp(prefix="live-", dir=run_root)
    try:
        # A's QEMU (another user) must reach the socket in here.
        os.chmod(run_dir, 0o711)  # noqa: S103
        try:
            report = preflight.check(conn, source, target, a_live,
                                     a_migratable, live_xml, cookie, run_dir)
            hdr = header.SaveHeader(xml=live_xml, cookie=cookie).to_bytes()
            moving = _Move(conn, source, target, run_dir, hdr, timeout,
                           before_stream, (stream_limit, stream_rate))
        except libvirt.libvirtError as exc:
            # Nothing has changed yet.
            raise errors.LiveMoveRefused(
                reason="libvirt: %s" % _message(exc)) from None
        return moving.run(report)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


class _Move:
    # A bare _Move (unit tests) has no connection to reattach.
    uri = reopened = None

    def __init__(self, conn, source, target, run_dir, hdr, timeout,
                 before_stream, faults):
        self.conn, self.source, self.target = conn, source, target
        self.names = {"source": source.name(), "target": target.name()}
        self.uri = conn.getURI()
        self.uuids = (source.UUIDString(), target.UUIDString())
        self.deadline = time.monotonic() + timeout
        self.before_stream = before_stream
        self.fifo = os.path.join(run_dir, "restore.fifo")
        self.sock = os.path.join(run_dir, "stream.sock")
        os.mkfifo(self.fifo, 0o600)
        self.relay = relay_mod.Relay(self.fifo, self.sock, hdr,
                                     qemu_owner(source), self.deadline,
                                     *faults)
        self.restore = _Restore(conn.getURI(), self.fifo)

    def run(self, report):
        try:
            return self._run(report)
        finally:
            # The connection the undo reopened after a libvirtd restart.
            self.reopened = virt.close_quietly(self.reopened)

    def _run(self, report):
        self.relay.start()
        self.restore.start()
        started, stats = time.monotonic(), {}
        try:
            self._wait_target_waiting()
            if self.before_stream is not None:
                self.before_stream()
            qmp(self.source, "migrate-set-parameters",
                **{"max-bandwidth": MAX_BANDWIDTH})
            started = time.monotonic()
            qmp(self.source, "migrate", uri="unix:" + self.sock)
            stats = self._wait_migration()
            self.restore.join(max(0.0, self.deadline - time.monotonic()))
            if self.restore.is_alive():
                raise _Failed("libvirt's restore of B did not return in time")
            if not self.restore.ok:
                raise _Failed("libvirt could not load A's state into B: %s"
                              % self.restore.error)
        except Exception as exc:  # every failure is undone, then raised
            reason = str(exc) if isinstance(exc, _Failed) else repr(exc)
            self._undo(reason)  # raises unless B took over after all
        switch = time.monotonic() - started
        self._finish()
        return MoveResult(downtime_ms=stats.get("downtime"),
                          migration_ms=stats.get("total-time"),
                          switch_seconds=switch,
                          stream_bytes=self.relay.stream_bytes,
                          preflight=report)

    def _expired(self, what):
        if time.monotonic() > self.deadline:
            raise _Failed("timed out waiting for %s" % what)

    def _wait_target_waiting(self):
        """Until libvirt started B's QEMU and it waits for the stream."""
        while True:
            if not self.restore.is_alive():
                raise _Failed("libvirt's restore of B ended before A's "
                              "state was sent: %s" % self.restore.error)
            if self.relay.error:
                raise _Failed(self.relay.error)
            if virt.state(self.target) == virt.PAUSED:
                return
            self._expired("B's QEMU to start")
            time.sleep(POLL)

    def _wait_migration(self):
        while True:
            stats = qmp(self.source, "query-migrate") or {}
            status = stats.get("status")
            if status == "completed":
                return stats
            if status in ("failed", "cancelled"):
                raise _Failed("A's migration %s: %s" % (
                    status, stats.get("error-desc", "no reason given")))
            self._expired("A's migration")
            time.sleep(POLL)

    def _reattach(self, reason):
        """A connection that works again after a libvirtd restart, A and
        B looked up on it by UUID (:mod:`.reconnect`).  One not found
        keeps its dead handle, which reads as gone."""
        if self.uri is None:
            return
        try:
            conn, doms, reopened = reconnect.reattach(
                self.conn, self.uri, self.uuids)
        except libvirt.libvirtError as exc:
            raise errors.LiveMoveIncomplete(
                reason="%s; libvirtd does not answer since it went away (%s)"
                ": nothing was undone, look at A and B there"
                % (reason, _message(exc)), **self.names) from None
        if not reopened:
            return
        virt.close_quietly(self.reopened)  # restarted twice
        self.conn = self.reopened = conn
        self.source = doms[0] or self.source
        self.target = doms[1] or self.target

    def _finish(self):
        """B loaded A's state: A is never resumed from here on."""
        self._reattach("B loaded A's state; A is left paused and not "
                       "resumed, because B may have run guest code")
        state = virt.state(self.target)
        if state != virt.RUNNING:
            raise errors.LiveMoveIncomplete(
                reason="B loaded A's state but is %s; A is left paused and "
                "not resumed, because B may have run guest code: resume B"
                % state, **self.names)
        try:
            self.source.destroy()
        except libvirt.libvirtError as exc:
            if virt.state(self.source) not in (virt.GONE, virt.SHUT_OFF):
                raise errors.LiveMoveIncomplete(
                    reason="B runs the guest, but A (paused) could not be "
                    "destroyed: %s; destroy A" % _message(exc),
                    **self.names) from None
        LOG.info("Live move of %(source)s into %(target)s done", self.names)

    def _cancel_migration(self):
        """A's migration ended (cancelled, failed or completed): QEMU
        resumes A itself after a cancel, and refuses ``cont`` before."""
        deadline = time.monotonic() + UNDO_WAIT
        try:
            qmp(self.source, "migrate_cancel")
            while time.monotonic() < deadline:
                status = (qmp(self.source, "query-migrate") or {}).get(
                    "status")
                if status in (None, "none", "completed", "failed",
                              "cancelled"):
                    return
                time.sleep(POLL)
        except _Failed as exc:
            LOG.warning("%s", exc)

    def _undo(self, reason):
        LOG.warning("Live move of %s into %s failed, undoing: %s",
                    self.names["source"], self.names["target"], reason)
        self.relay.cancel()
        self._reattach(reason)
        self._cancel_migration()
        self.relay.join(UNDO_WAIT)
        if self.relay.error not in (None, "cancelled") and \
                self.relay.error not in reason:
            # A cut stream shows on A as a failed migration: say why.
            reason = "%s (the stream: %s)" % (reason, self.relay.error)
        deadline = time.monotonic() + UNDO_WAIT
        while self.restore.is_alive() and time.monotonic() < deadline:
            self.relay.unblock_reader()
            self.restore.join(0.1)
        if self.restore.ok:
            # B loaded the whole stream after all: it has run, so the move
            # goes forward (run() finishes it), never back to A.
            LOG.warning("B loaded A's state despite that: finishing")
            return
        if virt.state(self.target) == virt.RUNNING:
            # libvirt resumed B but its answer was lost (libvirtd
            # restarted): B has run guest code, never go back to A.
            LOG.warning("B runs although the restore did not say so: "
                        "finishing")
            return
        if virt.state(self.target) not in (virt.SHUT_OFF, virt.GONE):
            try:
                self.target.destroy()
            except libvirt.libvirtError as exc:
                LOG.warning("Cannot destroy B: %s", _message(exc))
        if virt.state(self.source) == virt.PAUSED:
            try:
                self.source.resume()
            except libvirt.libvirtError as exc:
                raise errors.LiveMoveIncomplete(
                    reason="%s; A could not be resumed: %s"
                    % (reason, _message(exc)), **self.names) \
                    from None
        state = virt.state(self.source)
        if state != virt.RUNNING or virt.state(self.target) == virt.RUNNING:
            raise errors.LiveMoveIncomplete(
                reason="%s; after the undo A is %s and B is %s"
                % (reason, state, virt.state(self.target)), **self.names)
        raise errors.LiveMoveFailed(reason=reason, **self.names)
