"""Proof that a block copy lost no write up to its source domain's end.

A clean cutover lets the guest shut itself down (CloudStack's stop: ACPI
power button, then a destroy once CloudStack's own timeout runs out) while
the synchronous mirror keeps every write on both sides.  The target is
accepted only if the job stayed whole until the domain ended.  libvirt
9.0's block job events cannot say so: a job failure shortly before the
domain's end is dropped, not delivered.  QEMU's own events, passed through
libvirt's QEMU monitor event API, are.  Measured here:

- target daemon killed, a guest write that then completed on the source
  only, domain destroyed at once: BLOCK_JOB_ERROR arrived;
- guest shutdown: POWERDOWN, SHUTDOWN guest=true, STOP, then SHUTDOWN
  host-signal (libvirt ends QEMU) and the job cancelled by QEMU's exit.

The rule follows QEMU's order of work:

- a failed target write emits BLOCK_JOB_ERROR before the guest's request
  completes, so a failure while the guest ran or drained is seen: any
  BLOCK_JOB_ERROR fails;
- QEMU drains every guest request through the still-running job before it
  cancels the job on exit; the job must not end before the first SHUTDOWN;
- no SHUTDOWN before the domain ended (QEMU crashed, or the domain moved
  away: migrated, saved): fails;
- a job that completed with an error fails.

The proof is complete before the domain's end: once the job ended after a
SHUTDOWN, with no error, QEMU had drained every guest request through it
and writes nothing more to the target.  That comes a few milliseconds
after the guest's shutdown; libvirt reaps QEMU 1-2 s later (measured), and
the cutover need not wait for that.

SHUTDOWN guest=true is a clean guest shutdown; guest=false means the host
ended QEMU (CloudStack's stop gave up on the guest and destroyed it):
every write the guest saw complete is still on both sides
(crash-consistent), and the result says which one it was.
"""

import functools
import json
import threading
import time

import libvirt
import libvirt_qemu
from oslo_log import log as logging

from cs2os_agent import virt
from cs2os_agent.common import mirror_errors

LOG = logging.getLogger(__name__)

# JOB_STATUS_CHANGE states in which a job is ending or gone.
_ENDING = ("waiting", "pending", "aborting", "concluded", "null")
# How the domain may end for the target to count: by its QEMU's exit.
_STOPPED_OK = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shut down",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
}


def _job_name(data):
    return data.get("device") or data.get("id") or "?"


def _job_ended(name, data):
    return name in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED") or (
        name == "JOB_STATUS_CHANGE" and data.get("status") in _ENDING)


class SourceEndWatch:
    """Records a domain's QEMU events until the domain ends.

    Register (``with``) before the last check of the job: whatever happens
    after that check is then seen.  The caller's process needs a running
    libvirt event loop (:class:`.kvmhost.KvmHost` starts one).
    """

    def __init__(self, conn, dom, disk, jobs=1):
        self.conn = conn
        self.dom = dom
        self.disk = disk
        # A warm migration with data disks runs one job per disk: the job
        # end proves the target whole only once every one of them ended.
        self.jobs = jobs
        self.name = dom.name()
        self.events = []  # (wall time, QMP event name, its data)
        self.stopped = None  # (wall time, lifecycle detail)
        self._cond = threading.Condition()
        self._qmp_id = None
        self._life_id = None

    def __enter__(self):
        try:
            self._qmp_id = libvirt_qemu.qemuMonitorEventRegister(
                self.conn, self.dom, None, self._on_qmp, None, 0)
            self._life_id = self.conn.domainEventRegisterAny(
                self.dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                self._on_lifecycle, None)
        except libvirt.libvirtError as exc:
            self.__exit__(None, None, None)
            raise self._fail("cannot watch the domain's QEMU events: %s"
                             % exc.get_error_message()) from None
        return self

    def __exit__(self, *exc_info):
        self._qmp_id = virt.deregister_quietly(
            functools.partial(libvirt_qemu.qemuMonitorEventDeregister,
                              self.conn), self._qmp_id)
        self._life_id = virt.deregister_quietly(
            self.conn.domainEventDeregisterAny, self._life_id)

    def _fail(self, reason):
        return mirror_errors.BlockCopyFailed(domain=self.name, disk=self.disk,
                                             reason=reason)

    # Called on the libvirt event loop's thread.
    def _on_qmp(self, conn, dom, event, seconds, micros, details, opaque):
        try:
            data = json.loads(details) if details else {}
        except ValueError:
            data = {"details": details}
        with self._cond:
            self.events.append((time.time(), event, data))
            self._cond.notify_all()

    def _on_lifecycle(self, conn, dom, event, detail, opaque):
        if event != libvirt.VIR_DOMAIN_EVENT_STOPPED:
            return
        with self._cond:
            self.stopped = (time.time(), detail)
            self._cond.notify_all()

    def wait_ended(self, timeout):
        """True once libvirt reported the domain's end (all of its QEMU's
        events were delivered before that, on the same stream)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.stopped is not None,
                                       timeout)

    def wait_decided(self, timeout):
        """True once the verdict cannot change: the domain ended, the job
        ended after a SHUTDOWN, or an error was reported."""
        with self._cond:
            return self._cond.wait_for(self._decided, timeout)

    def _decided(self):
        if self.stopped is not None:
            return True
        # An error refuses; a job end refuses before a SHUTDOWN, and
        # proves once every job ended after one.
        shutdown = False
        ended = set()
        for _at, name, data in self.events:
            if name == "BLOCK_JOB_ERROR":
                return True
            if name == "SHUTDOWN":
                shutdown = True
            elif _job_ended(name, data):
                if not shutdown:
                    return True
                ended.add(_job_name(data))
        return len(ended) >= self.jobs

    def verdict(self):
        """How the source ended, if the target provably has every write.

        Decided by the job's end after a SHUTDOWN, or by the domain's end.
        Returns ``{"guest_shutdown": bool, "reason": ..., "down_at": wall
        time of the first SHUTDOWN, "ended": what proved it}``; raises
        BlockCopyFailed naming what breaks the proof.
        """
        with self._cond:
            events = list(self.events)
            stopped = self.stopped
        shutdown = job_end = None
        ended_jobs = set()
        for at, name, data in events:
            if name == "BLOCK_JOB_ERROR":
                raise self._fail(
                    "block job %s reported a %s error on its target (%s) "
                    "before the domain ended: the target misses writes"
                    % (_job_name(data), data.get("operation", "?"),
                       data.get("action", "?")))
            if name == "BLOCK_JOB_COMPLETED" and data.get("error"):
                raise self._fail("block job %s ended with an error: %s"
                                 % (_job_name(data), data["error"]))
            if shutdown is None:
                if name == "SHUTDOWN":
                    shutdown = (at, data)
                elif _job_ended(name, data):
                    raise self._fail(
                        "block job %s ended (%s) while the guest still ran: "
                        "writes after it are on the source only"
                        % (_job_name(data), data.get("status") or name))
            elif _job_ended(name, data):
                ended_jobs.add(_job_name(data))
                if len(ended_jobs) >= self.jobs:
                    job_end = job_end or name
        if stopped is not None:
            ended = _STOPPED_OK.get(stopped[1])
            if ended is None:
                raise self._fail("the domain ended abnormally (libvirt stop "
                                 "reason %d)" % stopped[1])
            if shutdown is None:
                raise self._fail(
                    "the domain %s without a shutdown from its QEMU "
                    "(crashed or killed): the target cannot be proven "
                    "complete" % ended)
            ended = "domain " + ended
        elif shutdown is not None and job_end is not None:
            ended = "job ended after the shutdown"
        else:
            raise self._fail("the domain has not ended")
        at, data = shutdown
        return {"guest_shutdown": bool(data.get("guest")),
                "reason": data.get("reason"), "down_at": at,
                "ended": ended}
