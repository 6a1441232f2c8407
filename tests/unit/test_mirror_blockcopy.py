"""The block copy's logic against a fake libvirt domain (no libvirtd)."""

from xml.etree import ElementTree

import libvirt
import pytest

from cs2os_agent.common import mirror_errors
from cs2os_agent.common import nbd
from cs2os_agent.sourcehost import blockcopy

DOM_XML = """<domain type='kvm'><name>i-2-7-VM</name><devices>
<disk type='file' device='disk'><source file='/mnt/p/v'/>
<target dev='vda' bus='virtio'/>%s</disk></devices>
<seclabel type='dynamic' model='dac' relabel='yes'>
<label>+64055:+64055</label><imagelabel>+64055:+64055</imagelabel>
</seclabel></domain>"""


class FakeDomain:
    """Just the calls BlockCopy makes, recorded in order."""

    def __init__(self):
        self.calls = []
        self.job = None  # {"cur", "end"} while libvirt has the job
        self.ready = False
        self.state_ = libvirt.VIR_DOMAIN_RUNNING
        self.abort_fails = False
        self.xml_reads = 0

    def name(self):
        return "i-2-7-VM"

    def XMLDesc(self, flags):  # noqa: N802 - libvirt's name
        self.xml_reads += 1
        mirror = ""
        if self.job is not None:
            mirror = "<mirror type='network' job='copy'%s/>" % (
                " ready='yes'" if self.ready else "")
        return DOM_XML % mirror

    def blockCopy(self, disk, xml, params, flags):  # noqa: N802
        self.calls.append(("blockCopy", disk, xml, params, flags))
        self.job = {"cur": 0, "end": 100}

    def blockJobInfo(self, disk, flags):  # noqa: N802
        return dict(self.job, type=2, bandwidth=0) if self.job else {}

    def state(self):
        return [self.state_, 0]

    def suspend(self):
        self.calls.append(("suspend",))
        self.state_ = libvirt.VIR_DOMAIN_PAUSED

    def resume(self):
        self.calls.append(("resume",))
        self.state_ = libvirt.VIR_DOMAIN_RUNNING

    def blockJobAbort(self, disk, flags):  # noqa: N802
        self.calls.append(("blockJobAbort", disk, flags))
        if self.abort_fails:
            raise libvirt.libvirtError("abort refused")
        self.job = None


def test_flags_are_the_recipes():
    assert blockcopy.COPY_FLAGS == 0xF
    assert blockcopy.COPY_FLAGS & (
        libvirt.VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES)


def test_dest_xml_is_a_raw_nbd_network_disk_and_escaped():
    xml = nbd.dest_xml("cs2os-x", socket="/tmp/a'<b>.sock")
    assert xml.startswith("<disk type='network'><driver type='raw'/>")
    disk = ElementTree.fromstring(xml)
    source = disk.find("source")
    assert (source.get("protocol"), source.get("name")) == ("nbd", "cs2os-x")
    host = source.find("host")
    assert host.attrib == {"transport": "unix", "socket": "/tmp/a'<b>.sock"}
    tcp = ElementTree.fromstring(
        nbd.dest_xml("e", host="127.0.0.1", port=10811))
    assert tcp.find("source/host").attrib == {"name": "127.0.0.1",
                                              "port": "10811"}
    with pytest.raises(ValueError):
        nbd.dest_xml("e")


def test_qemu_owner_from_the_dac_label():
    assert blockcopy.qemu_owner(FakeDomain()) == "64055:64055"


def test_start_wait_ready_and_cutover_in_the_recipes_order():
    dom = FakeDomain()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>", bandwidth=1024)
    name, disk, xml, params, flags = dom.calls[0]
    assert (disk, flags) == ("vda", blockcopy.COPY_FLAGS)
    assert params == {libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH: 1024}
    polls = []

    def progress(status):
        polls.append(status)
        if len(polls) == 2:
            dom.job["cur"] = 100
            dom.ready = True

    status = job.wait_ready(10, interval=0, progress=progress)
    assert status.ready and status.cur == status.end == 100
    assert not polls[0].ready
    timings = job.cutover()
    # Suspend first, then end the job without pivot (flags 0).
    assert [c[0] for c in dom.calls[1:]] == ["suspend", "blockJobAbort"]
    assert dom.calls[-1] == ("blockJobAbort", "vda", 0)
    assert set(timings) == {"suspend", "abort", "total"}
    # Ended on purpose: not a failure.
    assert not job.check().active


def test_cutover_refused_before_ready_and_nothing_touched():
    dom = FakeDomain()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        job.cutover()
    assert "not ready" in str(err.value)
    assert [c[0] for c in dom.calls] == ["blockCopy"]


def test_a_job_that_vanishes_by_itself_failed():
    dom = FakeDomain()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")
    dom.job = None
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        job.wait_ready(10, interval=0)
    assert "source domain is running" in str(err.value)


def test_timeout_names_the_progress():
    dom = FakeDomain()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")
    dom.job["cur"] = 40
    with pytest.raises(mirror_errors.BlockCopyTimeout) as err:
        job.wait_ready(0, interval=0)
    assert "40 of 100" in str(err.value)


def test_cancel_ends_the_job_without_suspending():
    dom = FakeDomain()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")
    job.cancel()
    assert [c[0] for c in dom.calls] == ["blockCopy", "blockJobAbort"]
    assert dom.state_ == libvirt.VIR_DOMAIN_RUNNING
    job.cancel()  # again: nothing left to end
    assert len(dom.calls) == 2


def test_a_failed_cutover_resumes_the_source():
    dom = FakeDomain()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")
    dom.job["cur"] = 100
    dom.ready = True
    dom.abort_fails = True
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        job.cutover()
    assert "could not end the job" in str(err.value)
    assert [c[0] for c in dom.calls[1:]] == ["suspend", "blockJobAbort",
                                             "resume"]
    assert dom.state_ == libvirt.VIR_DOMAIN_RUNNING


def test_the_bulk_copy_is_polled_without_the_domain_xml():
    # READY is only in the XML, and a job still copying before its first
    # READY cannot be READY; once seen READY, every poll reads it (a
    # force cutover checks the job stayed READY).
    dom = FakeDomain()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")

    def xml_reads_for(cur, ready):
        dom.job["cur"], dom.ready = cur, ready
        before = dom.xml_reads
        status = job.status()
        return status.ready, dom.xml_reads - before

    assert xml_reads_for(40, False) == (False, 0)
    assert xml_reads_for(100, False) == (False, 1)
    assert xml_reads_for(100, True) == (True, 1)
    # A guest write in flight after READY (cur < end): still READY.
    assert xml_reads_for(90, True) == (True, 1)
    assert xml_reads_for(90, False) == (False, 1)


def test_job_events_wake_the_sleeper_and_go_with_it():
    class Conn:
        callbacks = {}

        def domainEventRegisterAny(self, dom, event, cb, opaque):  # noqa
            assert event == libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2
            self.callbacks[7] = cb
            return 7

        def domainEventDeregisterAny(self, callback_id):  # noqa: N802
            del self.callbacks[callback_id]

    conn, dom = Conn(), FakeDomain()
    with blockcopy.JobEvents(conn, dom) as events:
        assert not events.sleep(0.01)
        conn.callbacks[7](conn, dom, "vda", 2, 3, None)  # READY
        assert events.sleep(60)  # at once, not after 60 s
        assert not events.sleep(0.01)  # one event wakes one sleep
    assert conn.callbacks == {}
