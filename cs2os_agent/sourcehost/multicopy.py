"""Several block copies of one domain, watched and cut over as one.

A warm migration of a VM with data disks mirrors every disk: the root's
shallow copy into T, and each data disk's full copy into its Cinder
volume.  The guest's view of all of them must be the source's at one and
the same moment, so the jobs are one unit:

- ``status``: active only while every job is; READY only when every job
  is; ``cur``/``end`` summed (nothing left to copy anywhere exactly when
  the sums match, since no job's cur exceeds its end);
- ``cutover``: ONE suspend of the source, then every job checked READY,
  drained and ended (never pivoted); a failure before every job ended
  resumes the source, which runs on its own untouched disks;
- ``cancel``: ends every job that still runs.

It offers what :class:`.blockcopy.BlockCopy` offers the conductor's steps
(``name``, ``disk``, ``status``, ``check``, ``start``, ``cutover``,
``cancel``), so the steps watch one disk or several alike.
"""



from cs2os_agent.common import mirror_errors
from cs2os_agent.sourcehost import blockcopy
from cs2os_agent.sourcehost import kvmhost


class JobSet:
    """``copies``: [(BlockCopy, the NBD export it must write to)], the
    root's first."""

    def __init__(self, dom, copies):
        if not copies:
            raise ValueError("a JobSet needs at least one copy")
        self.dom = dom
        self.copies = list(copies)
        self.name = dom.name()
        self.disk = "+".join(job.disk for job, _export in self.copies)

    @property
    def count(self):
        return len(self.copies)

    @property
    def jobs(self):
        return [job for job, _export in self.copies]

    def _fail(self, reason):
        return mirror_errors.BlockCopyFailed(domain=self.name, disk=self.disk,
                                             reason=reason)

    def start(self, dest_xmls, bandwidth=None):
        """Start every copy (``dest_xmls`` in the same order)."""
        if len(dest_xmls) != len(self.copies):
            raise ValueError("%d destinations for %d copies"
                             % (len(dest_xmls), len(self.copies)))
        for job, dest in zip(self.jobs, dest_xmls, strict=True):
            job.start(dest, bandwidth=bandwidth)

    @staticmethod
    def _combine(statuses):
        return blockcopy.JobStatus(
            all(s.active for s in statuses),
            sum(s.cur for s in statuses), sum(s.end for s in statuses),
            all(s.ready for s in statuses))

    def status(self):
        return self._combine([job.status() for job in self.jobs])

    def check(self):
        """The combined status; BlockCopyFailed if any job ended by
        itself (its message names the disk)."""
        return self._combine([job.check() for job in self.jobs])

    def any_ours(self):
        """Some job runs into the export this migration gave it."""
        return any(job.status().active
                   and kvmhost.mirror_export(self.dom, job.disk) == export
                   for job, export in self.copies)

    def all_ours(self):
        """Every job runs, each into its own export."""
        return all(job.status().active
                   and kvmhost.mirror_export(self.dom, job.disk) == export
                   for job, export in self.copies)

    def cancel(self):
        for job in self.jobs:
            job.cancel()

    def cutover(self, require_ready=True):
        """Suspend the source once and end every job; every target is
        complete.  Timings in seconds, as BlockCopy.cutover's."""
        status = self.check()
        if require_ready and not (status.ready and status.cur == status.end):
            raise self._fail("cutover refused: not every job is ready (%d "
                             "of %d bytes)" % (status.cur, status.end))
        timings = blockcopy.suspend_and_end(self.dom, self.jobs, self._fail,
                                            require_ready)
        timings["jobs"] = self.count
        return timings
