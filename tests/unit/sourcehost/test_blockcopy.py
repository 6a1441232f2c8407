"""The block copy's logic against a fake libvirt domain (no libvirtd)."""

from xml.etree import ElementTree

import libvirt
import pytest

from cs2os_agent.common import mirror_errors
from cs2os_agent.common import nbd
from cs2os_agent.sourcehost import blockcopy
from tests.fakes import libvirt as fakes


def hand_driven():
    """A running domain whose job the test moves by hand (step 0)."""
    return fakes.FakeDomain(step=0)


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
    assert blockcopy.qemu_owner(hand_driven()) == "64055:64055"


def test_start_wait_ready_and_cutover_in_the_recipes_order():
    dom = hand_driven()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>", bandwidth=1024)
    assert dom.calls == ["blockCopy"]
    assert (dom.dest_xml, dom.flags) == ("<disk/>", blockcopy.COPY_FLAGS)
    assert dom.params == {libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH: 1024}
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
    assert dom.calls[1:] == ["suspend", "blockJobAbort(0)"]
    assert set(timings) == {"suspend", "abort", "total"}
    # Ended on purpose: not a failure.
    assert not job.check().active


def test_cutover_refused_before_ready_and_nothing_touched():
    dom = hand_driven()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        job.cutover()
    assert "not ready" in str(err.value)
    assert dom.calls == ["blockCopy"]


def test_a_job_that_vanishes_by_itself_failed():
    dom = hand_driven()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")
    dom.job = None
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        job.wait_ready(10, interval=0)
    assert "source domain is running" in str(err.value)


@pytest.mark.parametrize("state, says", [
    (libvirt.VIR_DOMAIN_SHUTDOWN, "shutting down"),
    (libvirt.VIR_DOMAIN_SHUTOFF, "shut off"),
])
def test_a_vanished_job_names_the_source_state(state, says):
    dom = hand_driven()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")
    dom.job, dom.state_ = None, state
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        job.check()
    assert "source domain is %s and its disk unchanged" % says \
        in str(err.value)


def test_timeout_names_the_progress():
    dom = hand_driven()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")
    dom.job["cur"] = 40
    with pytest.raises(mirror_errors.BlockCopyTimeout) as err:
        job.wait_ready(0, interval=0)
    assert "40 of 100" in str(err.value)


def test_cancel_ends_the_job_without_suspending():
    dom = hand_driven()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")
    job.cancel()
    assert dom.calls == ["blockCopy", "blockJobAbort(0)"]
    assert dom.state_ == libvirt.VIR_DOMAIN_RUNNING
    job.cancel()  # again: nothing left to end
    assert len(dom.calls) == 2


def test_a_failed_cutover_resumes_the_source():
    dom = hand_driven()
    job = blockcopy.BlockCopy(dom)
    job.start("<disk/>")
    dom.job["cur"] = 100
    dom.ready = True
    dom.fail["blockJobAbort"] = "abort refused"
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        job.cutover()
    assert "could not end the job" in str(err.value)
    assert dom.calls[1:] == ["suspend", "blockJobAbort(0)", "resume"]
    assert dom.state_ == libvirt.VIR_DOMAIN_RUNNING


def test_the_bulk_copy_is_polled_without_the_domain_xml():
    # READY is only in the XML, and a job still copying before its first
    # READY cannot be READY; once seen READY, every poll reads it (a
    # force cutover checks the job stayed READY).
    dom = hand_driven()
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
    dom = hand_driven()
    conn = fakes.FakeConnection(dom)
    with blockcopy.JobEvents(conn, dom) as events:
        assert not events.sleep(0.01)
        # READY, as libvirt's event loop delivers it.
        assert conn.emit(libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, dom,
                         "vda", 2, 3) == 1
        assert events.sleep(60)  # at once, not after 60 s
        assert not events.sleep(0.01)  # one event wakes one sleep
    assert conn.callbacks == {}


def test_job_events_refused_leave_polling_alone():
    dom = hand_driven()
    conn = fakes.FakeConnection(dom)
    conn.fail["domainEventRegisterAny"] = "events not supported"
    with blockcopy.JobEvents(conn, dom) as events:
        assert not events.sleep(0.01)
    assert conn.callbacks == {}
