"""Several block copies as one (sourcehost/multicopy.py), and the clean
cutover's proof counting every job (sourceend.SourceEndWatch jobs=N).

The jobs are BlockCopy-shaped fakes on one fake domain: what matters here
is how the set combines them, and that the source is suspended once."""

import json

import libvirt
import pytest

from cs2os_agent.common import mirror_errors
from cs2os_agent.sourcehost import blockcopy
from cs2os_agent.sourcehost import multicopy
from cs2os_agent.sourcehost import sourceend
from tests.fakes import libvirt as fakes


class Dom:
    def __init__(self):
        self.state_ = libvirt.VIR_DOMAIN_RUNNING
        self.calls = []

    def name(self):
        return "i-2-7-VM"

    def state(self):
        return [self.state_, 0]

    def suspend(self):
        self.calls.append("suspend")
        self.state_ = libvirt.VIR_DOMAIN_PAUSED

    def resume(self):
        self.calls.append("resume")
        self.state_ = libvirt.VIR_DOMAIN_RUNNING


class Job(blockcopy.BlockCopy):
    """A BlockCopy whose libvirt answers are scripted: ``info`` (cur,
    end), ``ready``; ``gone`` once it ended."""

    def __init__(self, dom, disk, cur=100, end=100, ready=True):
        super().__init__(dom, disk, shallow=disk == "vda")
        self.info, self.is_ready, self.gone = (cur, end), ready, False
        self.fail_end = False

    def status(self):
        if self.gone:
            return blockcopy.JobStatus(False, 0, 0, False)
        return blockcopy.JobStatus(True, *self.info, self.is_ready)

    def start(self, dest_xml, bandwidth=None):
        self.dom.calls.append("start %s %s" % (self.disk, dest_xml))

    def _end_job(self):
        if self.fail_end:
            raise self._fail("could not end the job")
        self._ending = True
        self.gone = True
        self.dom.calls.append("end %s" % self.disk)


def job_set(**kinds):
    dom = Dom()
    jobs = [Job(dom, "vda", **kinds.get("vda", {})),
            Job(dom, "vdb", **kinds.get("vdb", {})),
            Job(dom, "vdc", **kinds.get("vdc", {}))]
    return dom, jobs, multicopy.JobSet(dom, [(j, "e-" + j.disk)
                                             for j in jobs])


def test_the_root_mirror_is_shallow_a_data_disks_full():
    assert blockcopy.BlockCopy(Dom(), "vda").flags == blockcopy.COPY_FLAGS
    full = blockcopy.BlockCopy(Dom(), "vdb", shallow=False).flags
    assert not full & libvirt.VIR_DOMAIN_BLOCK_COPY_SHALLOW
    shallow = libvirt.VIR_DOMAIN_BLOCK_COPY_SHALLOW
    assert full == blockcopy.COPY_FLAGS & ~shallow


def test_ready_only_when_every_job_is_and_nothing_left_anywhere():
    _dom, jobs, js = job_set(vdc={"cur": 40, "end": 100, "ready": False})
    status = js.status()
    assert (status.active, status.cur, status.end, status.ready) == (
        True, 240, 300, False)
    assert js.disk == "vda+vdb+vdc" and js.count == 3
    jobs[2].info, jobs[2].is_ready = (100, 100), True
    status = js.check()
    assert status.ready and status.cur == status.end == 300


def test_one_job_gone_by_itself_fails_the_set_naming_its_disk():
    _dom, jobs, js = job_set()
    jobs[1].gone = True
    assert js.status().active is False
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        js.check()
    assert "vdb" in str(err.value)


def test_start_gives_each_job_its_own_destination():
    dom, _jobs, js = job_set()
    js.start(["<a/>", "<b/>", "<c/>"])
    assert dom.calls == ["start vda <a/>", "start vdb <b/>",
                         "start vdc <c/>"]
    with pytest.raises(ValueError):
        js.start(["<a/>"])


def test_cutover_suspends_once_and_ends_every_job():
    dom, jobs, js = job_set()
    timings = js.cutover()
    assert dom.calls == ["suspend", "end vda", "end vdb", "end vdc"]
    assert timings["jobs"] == 3
    assert all(j.gone for j in jobs)


def test_cutover_refused_when_one_job_is_not_ready_nothing_touched():
    dom, _jobs, js = job_set(vdb={"cur": 10, "end": 100, "ready": False})
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        js.cutover()
    assert "not every job is ready" in str(err.value)
    assert dom.calls == []


def test_a_job_failing_to_end_resumes_the_source():
    dom, jobs, js = job_set()
    jobs[2].fail_end = True
    with pytest.raises(mirror_errors.BlockCopyFailed):
        js.cutover()
    assert dom.calls == ["suspend", "end vda", "end vdb", "resume"]
    assert dom.state_ == libvirt.VIR_DOMAIN_RUNNING


def test_cancel_ends_every_job_still_running():
    dom, jobs, js = job_set()
    jobs[0].gone = True  # ended already
    js.cancel()
    assert dom.calls == ["end vdb", "end vdc"]


# -- the clean cutover's proof with several jobs ------------------------------


def _watch(jobs):
    dom = fakes.FakeDomain()
    return sourceend.SourceEndWatch(fakes.FakeConnection(dom), dom,
                                    "vda+vdb", jobs=jobs)


def _feed(w, events):
    for i, (name, data) in enumerate(events):
        w._on_qmp(w.conn, w.dom, name, 1000 + i, 0, json.dumps(data), None)


SHUTDOWN = ("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})


def _cancelled(job):
    return ("BLOCK_JOB_CANCELLED", {"device": job, "type": "mirror"})


def test_the_proof_waits_for_every_jobs_end_after_the_shutdown():
    w = _watch(2)
    _feed(w, [SHUTDOWN, _cancelled("copy-vda"),
              ("JOB_STATUS_CHANGE", {"id": "copy-vda", "status": "null"})])
    assert w.wait_decided(0) is False  # vdb's job has not ended yet
    with pytest.raises(mirror_errors.BlockCopyFailed):
        w.verdict()
    _feed(w, [_cancelled("copy-vdb")])
    assert w.wait_decided(0) is True
    assert w.verdict()["ended"] == "job ended after the shutdown"


def test_any_jobs_end_before_the_shutdown_refuses_at_once():
    w = _watch(2)
    _feed(w, [_cancelled("copy-vdb"), SHUTDOWN, _cancelled("copy-vda")])
    assert w.wait_decided(0) is True
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        w.verdict()
    assert "copy-vdb" in str(err.value)


def test_an_error_on_any_job_refuses():
    w = _watch(2)
    _feed(w, [("BLOCK_JOB_ERROR", {"device": "copy-vdc", "operation":
                                   "write", "action": "report"}),
              SHUTDOWN, _cancelled("copy-vda"), _cancelled("copy-vdc")])
    assert w.wait_decided(0) is True
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        w.verdict()
    assert "copy-vdc" in str(err.value)
