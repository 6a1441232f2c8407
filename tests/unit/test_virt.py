"""cs2os_agent.virt: libvirt's setup, state names and XML, once."""

import pathlib

import libvirt
import pytest

from cs2os_agent import virt
from tests.fakes import libvirt as fakes


def test_the_state_names_the_flows_compare():
    # What the conductor's flows compare virt.state() with, and the agent
    # reports over RPC.
    assert (virt.RUNNING, virt.PAUSED, virt.SHUTTING_DOWN, virt.SHUT_OFF,
            virt.GONE) == ("running", "paused", "shutting down",
                           "shut off", "gone")


@pytest.mark.parametrize("code, name", [
    (libvirt.VIR_DOMAIN_RUNNING, virt.RUNNING),
    (libvirt.VIR_DOMAIN_PAUSED, virt.PAUSED),
    (libvirt.VIR_DOMAIN_SHUTDOWN, virt.SHUTTING_DOWN),
    (libvirt.VIR_DOMAIN_SHUTOFF, virt.SHUT_OFF),
    (libvirt.VIR_DOMAIN_NOSTATE, "nostate"),
    (libvirt.VIR_DOMAIN_BLOCKED, "blocked"),
    (libvirt.VIR_DOMAIN_CRASHED, "crashed"),
    (libvirt.VIR_DOMAIN_PMSUSPENDED, "pmsuspended"),
    (42, "unknown(42)"),
])
def test_state_names_every_libvirt_state(code, name):
    dom = fakes.FakeDomain()
    dom.state_ = code
    assert virt.state(dom) == virt.state_name(code) == name


def test_a_domain_libvirt_no_longer_knows_is_gone():
    dom = fakes.FakeDomain()
    dom.gone = True
    assert virt.state(dom) == virt.GONE


def test_init_quiets_libvirt_and_may_run_twice(monkeypatch):
    registered = []
    monkeypatch.setattr(libvirt, "registerErrorHandler",
                        lambda f, ctx: registered.append((f, ctx)))
    virt.init()
    virt.init()
    assert registered == [(virt._ignore_error, None)] * 2
    assert virt._ignore_error(None, (1, 0, "quiet")) is None


@pytest.mark.parametrize("call", ["registerErrorHandler(",
                                  "virEventRegisterDefaultImpl("])
def test_only_virt_sets_libvirt_up(call):
    # Each main calls virt.init(); no module may register a handler or an
    # event loop of its own (at import, as they once did).
    package = pathlib.Path(virt.__file__).parent
    found = sorted(str(path.relative_to(package))
                   for path in package.rglob("*.py")
                   if call in path.read_text())
    assert found == ["virt.py"]


def test_the_event_loop_starts_once(monkeypatch):
    started = []

    class Thread:
        def __init__(self, target, name, daemon):
            assert (name, daemon) == ("libvirt-events", True)

        def start(self):
            started.append(self)

    monkeypatch.setattr(virt, "_event_loop", None)
    monkeypatch.setattr(virt.threading, "Thread", Thread)
    monkeypatch.setattr(libvirt, "virEventRegisterDefaultImpl",
                        lambda: started.append("registered"))
    virt.ensure_event_loop()
    virt.ensure_event_loop()
    assert started[0] == "registered" and len(started) == 2


def test_open_is_libvirts(monkeypatch):
    monkeypatch.setattr(libvirt, "open", lambda uri: ("conn", uri))
    assert virt.open("qemu:///system") == ("conn", "qemu:///system")


def test_no_such_domain():
    assert virt.no_such_domain(
        fakes.error("gone", libvirt.VIR_ERR_NO_DOMAIN))
    assert not virt.no_such_domain(fakes.error("refused"))


def test_domain_xml_is_the_live_xml_parsed():
    dom = fakes.FakeDomain()
    root = virt.domain_xml(dom)
    assert root.findtext("name") == "i-2-7-VM"
    assert virt.parse_xml(dom.XMLDesc(0)).findtext("uuid") == dom.uuid
    dom.fail["XMLDesc"] = "connection lost"
    with pytest.raises(libvirt.libvirtError):
        virt.domain_xml(dom)


def test_deregister_quietly():
    undone = []
    assert virt.deregister_quietly(undone.append, None) is None
    assert virt.deregister_quietly(undone.append, 3) is None
    assert undone == [3]

    def refuse(callback_id):
        raise fakes.error("connection closed")

    assert virt.deregister_quietly(refuse, 4) is None
