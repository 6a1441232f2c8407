"""The source side of the mirror: libvirt's block copy on the KVM host.

Whoever drives it (the conductor, or a test) holds a libvirt connection to
the CloudStack host's libvirtd and the running domain.  The copy goes into
the agent's NBD export as ``<disk type='network'>`` with flags:

- SHALLOW: only the top layer A; the template B is already the target's
  base D (prove that first: :mod:`cs2os_agent.agent.mirror.baseproof`);
- REUSE_EXT: the target exists (T on D); libvirt must not create it;
- TRANSIENT_JOB: CloudStack's domains are transient, which libvirt refuses
  a non-transient copy job for;
- SYNCHRONOUS_WRITES: once READY, a guest write completes only when it is
  on both sides.  Without it the READY-phase writes were missing after a
  destroy (recipe finding): never run the mirror without it.

Cutover (recipe finding, 15-34 ms for the disk part): suspend the source,
end the job *without* pivot (libvirt reports CANCELED: that is success
here), then the agent closes the export (T durable), and only then is the
source destroyed (1.2-2 s, off the critical path).  Aborting the job
without suspending first lets a guest write land in A only: a mismatch.

The job is watched by polling (``blockJobInfo`` for cur/end, the live
XML's ``<mirror ready='yes'>`` for READY): polling sees the same state
libvirt keeps.  A job that vanishes while nobody ended it has failed
(libvirt drops a transient job once QEMU concluded it, e.g. on an NBD
write error).  A caller with a libvirt event loop may also wake its poll
on the job's events (:class:`JobEvents`), so READY is seen when it comes,
not up to a poll interval late.
"""

import dataclasses
import threading
import time

import libvirt
from oslo_log import log as logging

from cs2os_agent import virt
from cs2os_agent.common import mirror_errors

LOG = logging.getLogger(__name__)

COPY_FLAGS = (libvirt.VIR_DOMAIN_BLOCK_COPY_SHALLOW
              | libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT
              | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
              | libvirt.VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES)
# A data disk's copy into its Cinder volume: the whole guest view (the
# volume has no base), so not SHALLOW; the rest as above.
FULL_COPY_FLAGS = COPY_FLAGS & ~libvirt.VIR_DOMAIN_BLOCK_COPY_SHALLOW


def qemu_owner(dom):
    """``uid:gid`` the domain's QEMU runs as (its DAC label), or None.

    The NBD socket on the source host must be connectable by this user.
    libvirt writes the label as ``+64055:+64055``.
    """
    labels = virt.domain_xml(dom).findall("./seclabel[@model='dac']/label")
    for label in labels:
        text = (label.text or "").replace("+", "")
        uid, sep, gid = text.partition(":")
        if sep and uid.isdigit() and gid.isdigit():
            return "%s:%s" % (uid, gid)
    return None


def _mirror_element(dom, disk):
    for d in virt.domain_xml(dom).findall("./devices/disk"):
        target = d.find("target")
        if target is not None and target.get("dev") == disk:
            return d.find("mirror")
    return None


@dataclasses.dataclass(frozen=True)
class JobStatus:
    active: bool  # libvirt still has the job
    cur: int
    end: int
    ready: bool  # every write now lands on both sides

    def as_dict(self):
        return dataclasses.asdict(self)


class BlockCopy:
    """One block copy job on one disk of a running source domain."""

    def __init__(self, dom, disk="vda", shallow=True):
        self.dom = dom
        self.disk = disk
        self.flags = COPY_FLAGS if shallow else FULL_COPY_FLAGS
        self.name = dom.name()
        self.started = None
        self.ready_after = None
        self._ending = False  # we asked libvirt to end it
        self._seen_ready = False

    def _fail(self, reason):
        return mirror_errors.BlockCopyFailed(domain=self.name, disk=self.disk,
                                             reason=reason)

    def start(self, dest_xml, bandwidth=None):
        """Start the copy; ``bandwidth`` in bytes/s caps the bulk phase."""
        params = {}
        if bandwidth:
            params[libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH] = int(bandwidth)
        self._ending = False
        self.started = time.monotonic()
        try:
            self.dom.blockCopy(self.disk, dest_xml, params, self.flags)
        except libvirt.libvirtError as exc:
            raise self._fail("could not start: %s"
                             % exc.get_error_message()) from None
        LOG.info("Block copy of %s %s started in %.2f s", self.name,
                 self.disk, time.monotonic() - self.started)

    def status(self):
        # The segfault once seen here (issue 16, warm data disks) was not
        # this call's: over qemu+libssh, libvirt 9.0 stalls every reply
        # over 4 KiB (a domain XML) until a keepalive, and a keepalive
        # from the event loop thread that ends the stall leaves the
        # stalled call's socket watch pointing into a dead stack frame;
        # the next call on the connection (often this one) crashes in
        # virNetClientIOEventFD.  kvm_libvirt_uri must be qemu+ssh
        # (tools/testbed/kvm_ssh.py has the measurements).
        try:
            info = self.dom.blockJobInfo(self.disk, 0)
            mirror = None
            # Before its first READY a job still copying (cur < end)
            # cannot be READY: the bulk phase's polls skip the domain XML
            # (a whole XMLDesc through libvirtd each time).
            if info and (self._seen_ready
                         or info.get("cur") == info.get("end")):
                mirror = _mirror_element(self.dom, self.disk)
        except libvirt.libvirtError as exc:
            raise self._fail("cannot read the job: %s"
                             % exc.get_error_message()) from None
        if not info:
            return JobStatus(False, 0, 0, False)
        ready = mirror is not None and mirror.get("ready") == "yes"
        self._seen_ready = self._seen_ready or ready
        return JobStatus(True, info.get("cur", 0), info.get("end", 0), ready)

    def check(self):
        """The job's status; BlockCopyFailed if it ended by itself."""
        status = self.status()
        if not status.active and not self._ending:
            raise self._fail(
                "the job ended without being asked to (the NBD target "
                "closed or refused a write); the source domain is %s and "
                "its disk unchanged" % virt.state(self.dom))
        return status

    def wait_ready(self, timeout, interval=0.1, progress=None):
        """Poll until READY with every byte copied; return the status.

        ``progress(status)`` is called at each poll.  Raises
        BlockCopyFailed if the job fails, BlockCopyTimeout after
        ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.check()
            if progress is not None:
                progress(status)
            if status.ready and status.cur == status.end:
                if self.ready_after is None and self.started is not None:
                    self.ready_after = time.monotonic() - self.started
                return status
            if time.monotonic() > deadline:
                raise mirror_errors.BlockCopyTimeout(
                    domain=self.name, disk=self.disk, timeout=timeout,
                    cur=status.cur, end=status.end)
            time.sleep(interval)

    def _end_job(self):
        """blockJobAbort without pivot: the source keeps its own disk.

        Synchronous (no ABORT_ASYNC): it returns once QEMU ended the job,
        which libvirt reports as CANCELED, the expected end here.
        """
        self._ending = True
        try:
            self.dom.blockJobAbort(self.disk, 0)
        except libvirt.libvirtError as exc:
            if not self.status().active:
                return  # it ended meanwhile (or had failed): nothing to do
            raise self._fail("could not end the job: %s"
                             % exc.get_error_message()) from None

    def cutover(self, require_ready=True):
        """Freeze the source and end the job; the target is complete.

        Suspend first, then end the job (recipe order).  Returns timings in
        seconds.  Raises BlockCopyFailed if the job was not READY or failed;
        a source this call paused is resumed first, so a failed cutover
        leaves it running as it was (the mirror is then started again).
        """
        status = self.check()
        if require_ready and not (status.ready and status.cur == status.end):
            raise self._fail("cutover refused: the job is not ready (%d of "
                             "%d bytes)" % (status.cur, status.end))
        return suspend_and_end(self.dom, [self], self._fail, require_ready)

    def _wait_copied(self, status, timeout=30.0, interval=0.002):
        """Wait until nothing is left to copy (cur == end).

        The suspend drained the guest's writes, but one that raced the
        check before it may still be queued for the background copy
        (QEMU counts it in ``end``); ending the job before it is copied
        would lose it from the target.  With the guest frozen nothing new
        arrives, so this converges at once.
        """
        deadline = time.monotonic() + timeout
        while status.cur != status.end:
            if time.monotonic() > deadline:
                raise self._fail("%d of %d bytes copied %.0f s after the "
                                 "suspend" % (status.cur, status.end,
                                              timeout))
            time.sleep(interval)
            status = self.check()
        return status

    def _resume(self):
        try:
            self.dom.resume()
        except libvirt.libvirtError:
            LOG.exception("Could not resume %s after a failed cutover",
                          self.name)

    def cancel(self):
        """End the mirror before any cutover; the source runs on untouched.

        The target's content is then worthless (writes after this land in
        the source only): the agent discards it.
        """
        if self.status().active:
            self._end_job()
        self._ending = True


def suspend_and_end(dom, jobs, fail, require_ready=True):
    """The cutover of one or several block copies of ``dom`` (one code
    path for BlockCopy.cutover and multicopy.JobSet.cutover): suspend the
    source once (unless already paused), check every job a last time,
    wait until each has nothing left to copy, end each without pivot.

    A source this call paused is resumed if anything fails before every
    job ended, so it runs on its own untouched disks.  ``fail(reason)``
    makes the caller's BlockCopyFailed.  Returns timings in seconds.
    """
    t0 = time.monotonic()
    paused_here = False
    try:
        if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
            dom.suspend()
            paused_here = True
    except libvirt.libvirtError as exc:
        raise fail("could not suspend the source: %s"
                   % exc.get_error_message()) from None
    t1 = time.monotonic()
    try:
        # The last check of every job, with the guest frozen: a write that
        # failed on a target between the caller's check and the suspend
        # must not go unnoticed.
        for job in jobs:
            status = job.check()
            if require_ready and not status.ready:
                raise job._fail("the job left READY before the cutover")
            if require_ready:
                job._wait_copied(status)
        for job in jobs:
            job._end_job()
    except BaseException:
        if paused_here:
            jobs[0]._resume()
        raise
    t2 = time.monotonic()
    return {"suspend": t1 - t0, "abort": t2 - t1, "total": t2 - t0}


class JobEvents:
    """Wakes a poller when libvirt reports anything of a domain's block
    jobs (READY above all), so the poll interval bounds progress updates
    only, not how late READY is seen.

    The events only wake: the poll still reads the state.  Needs a running
    libvirt event loop in the caller's process (:class:`.kvmhost.KvmHost`
    starts one).
    """

    def __init__(self, conn, dom):
        self.conn = conn
        self.dom = dom
        self._fired = threading.Event()
        self._callback_id = None

    def __enter__(self):
        try:
            self._callback_id = self.conn.domainEventRegisterAny(
                self.dom, libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2,
                self._on_event, None)
        except libvirt.libvirtError as exc:
            # Polling alone still works, up to one interval late.
            LOG.warning("Not woken by %s's block job events: %s",
                        self.dom.name(), exc.get_error_message())
        return self

    def __exit__(self, *exc_info):
        self._callback_id = virt.deregister_quietly(
            self.conn.domainEventDeregisterAny, self._callback_id)

    # Called on the libvirt event loop's thread.
    def _on_event(self, conn, dom, disk, job_type, status, opaque):
        self._fired.set()

    def sleep(self, seconds):
        """Up to ``seconds``; True if an event cut it short."""
        fired = self._fired.wait(seconds)
        self._fired.clear()
        return fired
