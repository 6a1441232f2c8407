"""The conductor's connection to a KVM host over qemu+ssh answers large
replies at once (issue 16's segfault).

Over qemu+libssh, libvirt 9.0 stalled every reply over 4 KiB until the
next keepalive (5.0 s per XMLDesc, measured), and a keepalive that ended
the stall from the event loop thread left a dangling socket watch that
crashed the process on its next call (sourcehost/kvmhost.py).  The
warm flows read the source domain's XML (5 KiB and more on a real
CloudStack host) in validate, at every READY poll and in the cutover's
downtime.  Here: cs2os's own KvmHost (keepalive on, libvirt's event loop
running, as in the conductor) over the testbed's qemu+ssh URI to a real
sshd and this machine's libvirtd, a persistent (never started) domain
whose XML is 12 KiB, read many times, interleaved with small calls.
"""

import time
import types
import uuid
from xml.sax import saxutils

import libvirt
import pytest

from cs2os_agent.common import mirror_errors
from cs2os_agent.sourcehost import kvmhost
from tools.testbed import harness as ft
from tools.testbed import sshd
from tools.testbed import warm_chain

CALLS = 12
# A stalled reply took 5.0 s; an answered one takes milliseconds.
SLOWEST_ALLOWED = 1.0


@pytest.fixture(scope="module")
def server(workdir):
    try:
        srv = sshd.Server(workdir).start()
    except sshd.HarnessError as exc:
        pytest.fail("the test sshd did not start: %s" % exc, pytrace=False)
    yield srv
    srv.stop()


@pytest.fixture
def big_domain(services):
    """A defined, inactive domain with a 12 KiB XML (a description)."""
    name = "cs2os-%s-bigxml-%s" % (ft.RUN_ID, uuid.uuid4().hex[:8])
    xml = ("<domain type='kvm'><name>%s</name><description>%s"
           "</description><memory unit='MiB'>64</memory><os><type "
           "arch='x86_64'>hvm</type></os></domain>"
           % (name, saxutils.escape("x" * 12 * 1024)))
    conn = libvirt.open(ft.LIBVIRT_URI)
    dom = conn.defineXML(xml)
    try:
        yield name
    finally:
        dom.undefine()
        conn.close()


def test_large_replies_over_qemu_ssh_do_not_stall(server, big_domain):
    conf = types.SimpleNamespace(cloudstack=types.SimpleNamespace(
        kvm_libvirt_uri=warm_chain.libvirt_uri(server)))
    with kvmhost.connect(conf, "127.0.0.1") as kvm:
        assert kvm.uri.startswith("qemu+ssh://")
        assert "command=" in kvm.uri  # the ssh with known_hosts pinned
        dom = kvm.domain(big_domain)
        took = []
        for _ in range(CALLS):
            started = time.monotonic()
            xml = dom.XMLDesc(0)
            took.append(time.monotonic() - started)
            # A small call right after a large reply: the one that
            # crashed after a stall ended by a keepalive.
            assert dom.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF
        assert len(xml) > 12 * 1024
        assert max(took) < SLOWEST_ALLOWED, took


@pytest.mark.parametrize("which", ["wrong_known_hosts", "other_known_hosts"])
def test_a_host_key_not_in_the_pinned_file_is_refused(server, which):
    """known_hosts=FILE is the only trust: the ssh libvirt runs never
    falls back to the conductor user's files nor accepts a new key."""
    uri = warm_chain.libvirt_uri(server).replace(
        server.known_hosts, getattr(server, which))
    conf = types.SimpleNamespace(cloudstack=types.SimpleNamespace(
        kvm_libvirt_uri=uri))
    with pytest.raises(mirror_errors.KvmHostUnreachable) as err:
        with kvmhost.connect(conf, "127.0.0.1"):
            pass
    assert "Host key verification failed" in str(err.value), err.value
