"""cs2os_agent.agent.live.hop and hop_spec: what the first hop asks of
libvirt, and who holds the guest after a failure.

The real hop runs against two libvirtds (tests/functional/
test_live_hop.py); these check the destination XML, the flags and params,
and fake the two ends to reach the outcomes a real run cannot be made to
hit on demand (A left paused, a copy running on both ends, A nowhere).
"""

import libvirt
import pytest

from cs2os_agent import virt
from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import hop
from cs2os_agent.agent.live import hop_spec

U1 = "11111111-1111-1111-1111-111111111111"
A_XML = """<domain type='kvm'>
  <name>i-2-7-VM</name>
  <uuid>%s</uuid>
  <memory unit='KiB'>65536</memory>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type></os>
  <devices>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source dev='/dev/vg0/vol-a' index='2'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04'
               function='0x0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <serial type='file'>
      <source path='/var/log/cs/i-2-7.log'/>
      <target type='isa-serial' port='0'/>
    </serial>
    <console type='file'>
      <source path='/var/log/cs/i-2-7.log'/>
      <target type='serial' port='0'/>
    </console>
    <serial type='pty'><log file='/var/log/cs/pty.log'/>
      <target port='1'/></serial>
  </devices>
</domain>""" % U1
NOVA = "/var/lib/nova/instances/2222/disk"


def _dest(**kwargs):
    return virt.parse_xml(hop_spec.dest_xml(A_XML, {"vda": NOVA}, **kwargs))


def test_disk_lands_on_novas_path_with_its_chain_left_to_libvirt():
    root = _dest(formats={"vda": "qcow2"})
    disk = root.find("devices/disk")
    assert disk.get("type") == "file"
    assert disk.find("source").attrib == {"file": NOVA}
    # A's backing chain is the source host's: the destination's file is
    # probed there, so no <backingStore> may name A's.
    assert disk.find("backingStore") is None
    assert disk.find("driver").get("type") == "qcow2"
    assert [c.tag for c in disk][:2] == ["driver", "source"]
    # Guest-visible: untouched, and name and UUID stay A's (libvirt
    # refuses a DEST_XML with another; DEST_NAME renames).
    assert disk.find("address").get("slot") == "0x04"
    assert (root.findtext("name"), root.findtext("uuid")) == ("i-2-7-VM", U1)


def test_format_stays_as_unless_given():
    assert _dest().find("devices/disk/driver").get("type") == "raw"


def test_a_block_device_path_is_a_block_disk():
    root = virt.parse_xml(hop_spec.dest_xml(A_XML, {"vda": "/dev/vg1/x"}))
    disk = root.find("devices/disk")
    assert disk.get("type") == "block"
    assert disk.find("source").attrib == {"dev": "/dev/vg1/x"}


def test_file_backed_consoles_are_moved_only_when_mapped():
    root = _dest(files={"/var/log/cs/i-2-7.log": "/var/lib/nova/c.log"})
    assert [el.find("source").get("path") for el in root.iter()
            if el.tag in ("serial", "console") and el.get("type") == "file"
            ] == ["/var/lib/nova/c.log"] * 2
    assert root.find("devices/serial[@type='pty']/log").get(
        "file") == "/var/log/cs/pty.log"


def test_a_disk_without_a_destination_is_refused():
    xml = A_XML.replace("<target dev='hdc' bus='ide'/>",
                        "<source file='/mnt/iso/x.iso'/>"
                        "<target dev='hdc' bus='ide'/>")
    with pytest.raises(hop_spec.Refused,
                       match="A's cdrom hdc has no destination path"):
        hop_spec.dest_xml(xml, {"vda": NOVA})


def test_a_destination_for_no_disk_of_a_is_refused():
    with pytest.raises(hop_spec.Refused,
                       match="A has no disk with target dev vdz"):
        hop_spec.dest_xml(A_XML, {"vda": NOVA, "vdz": "/x"})


def test_flags_full_copy_client_managed_never_persist_or_undefine():
    flags = hop_spec.migrate_flags()
    for wanted in ("LIVE", "NON_SHARED_DISK", "ABORT_ON_ERROR"):
        assert flags & getattr(libvirt, "VIR_MIGRATE_" + wanted), wanted
    # Not peer-to-peer: the agent drives it, A's libvirtd never logs in
    # to the Nova host's.
    for never in ("PEER2PEER", "PERSIST_DEST", "UNDEFINE_SOURCE",
                  "NON_SHARED_INC",
                  "AUTO_CONVERGE", "POSTCOPY", "TUNNELLED", "OFFLINE",
                  "PAUSED"):
        assert not flags & getattr(libvirt, "VIR_MIGRATE_" + never), never
    inc = hop_spec.migrate_flags(incremental=True, auto_converge=True)
    assert inc & libvirt.VIR_MIGRATE_NON_SHARED_INC
    assert not inc & libvirt.VIR_MIGRATE_NON_SHARED_DISK
    assert inc & libvirt.VIR_MIGRATE_AUTO_CONVERGE
    assert not inc & libvirt.VIR_MIGRATE_PERSIST_DEST


def test_params():
    assert hop_spec.migrate_params("<x/>", "tmp-1", {"vdb": 1, "vda": 2}) == {
        "destination_name": "tmp-1", "destination_xml": "<x/>",
        "migrate_disks": ["vda", "vdb"]}
    params = hop_spec.migrate_params("<x/>", "t", {"vda": 1}, "10.0.0.5",
                                     bandwidth_mib=100)
    assert params["migrate_uri"] == "tcp://10.0.0.5"
    assert params["listen_address"] == "10.0.0.5"
    assert params["bandwidth"] == 100
    assert hop_spec.migrate_params("<x/>", "t", {}, "fd00::5")[
        "migrate_uri"] == "tcp://[fd00::5]"


def _error(code, text):
    exc = libvirt.libvirtError(text)
    exc.err = (code, 0, text, 2, None, None, None, 0, 0)
    return exc


@pytest.mark.parametrize("code,text,reason", [
    (libvirt.VIR_ERR_CPU_INCOMPATIBLE, "the CPU is incompatible",
     "CPU incompatible"),
    (libvirt.VIR_ERR_NO_STORAGE_POOL, "no storage pool with matching",
     "destination disk path is missing"),
    (libvirt.VIR_ERR_OPERATION_FAILED, "Failed to connect to remote "
     "libvirt URI qemu+tls://n/system", "destination unreachable"),
    (libvirt.VIR_ERR_OPERATION_FAILED, "domain 'tmp' already exists with "
     "uuid", "name taken"),
])
def test_refusals_are_named(code, text, reason):
    assert reason in hop_spec.classify(_error(code, text))


def test_a_failure_midway_is_not_a_refusal():
    assert hop_spec.classify(_error(
        libvirt.VIR_ERR_OPERATION_FAILED, "migration job: unexpectedly "
        "failed")) is None


# -- who holds the guest ------------------------------------------------------

RUNNING, PAUSED, SHUTOFF = (libvirt.VIR_DOMAIN_RUNNING,
                            libvirt.VIR_DOMAIN_PAUSED,
                            libvirt.VIR_DOMAIN_SHUTOFF)


class Dom:
    def __init__(self, name, code, uuid=U1, persistent=False):
        self._name, self.code, self.uuid = name, code, uuid
        self.persistent, self.calls = persistent, []

    def name(self):
        return self._name

    def UUIDString(self):  # noqa: N802 - libvirt's name
        return self.uuid

    def state(self):
        if self.code is None:
            raise _error(libvirt.VIR_ERR_NO_DOMAIN, "gone")
        return [self.code, 0]

    def isActive(self):  # noqa: N802
        return self.code not in (None, SHUTOFF)

    def resume(self):
        self.calls.append("resume")
        self.code = RUNNING


class Conn:
    def __init__(self, *doms):
        self.doms = list(doms)

    def getURI(self):  # noqa: N802
        return "qemu+tls://nova/system"

    def getLibVersion(self):  # noqa: N802 - a live connection
        return 9000000

    def listAllDomains(self, flags):  # noqa: N802
        return self.doms

    def lookupByUUIDString(self, uuid):  # noqa: N802
        for dom in self.doms:
            if dom.uuid == uuid:
                return dom
        raise _error(libvirt.VIR_ERR_NO_DOMAIN, "no domain")


def _run(a, *dest_doms):
    return hop._Hop(Conn(a), a, Conn(*dest_doms))


def test_a_left_paused_with_no_copy_elsewhere_is_resumed():
    a = Dom("A", PAUSED)
    with pytest.raises(errors.HopFailed, match="A runs on the source again"):
        _run(a).after_failure(_error(1, "unexpectedly failed"), "broke")
    assert a.calls == ["resume"]


def test_a_running_after_a_prepare_error_is_a_refusal():
    a = Dom("A", RUNNING)
    with pytest.raises(errors.HopRefused, match="disk path is missing"):
        _run(a).after_failure(_error(libvirt.VIR_ERR_NO_STORAGE_POOL,
                                     "no storage pool"), "libvirt: ...")
    assert a.calls == []


def test_a_paused_and_a_copy_active_there_is_never_resumed():
    a, theirs = Dom("A", PAUSED), Dom("tmp-A", PAUSED)
    with pytest.raises(errors.HopIncomplete,
                       match="A is paused on the source, the destination's "
                       "copy is paused"):
        _run(a, theirs).after_failure(_error(1, "x"), "broke")
    assert a.calls == theirs.calls == []


def test_an_error_after_the_guest_arrived_is_a_finished_hop():
    a, theirs = Dom("A", None), Dom("tmp-A", RUNNING)
    assert _run(a, theirs).after_failure(_error(1, "x"), "rpc") is theirs


def test_a_nowhere_needs_an_operator():
    with pytest.raises(errors.HopIncomplete, match="A is gone"):
        _run(Dom("A", None)).after_failure(_error(1, "x"), "broke")


class Source(Dom):
    def isPersistent(self):  # noqa: N802
        return self.persistent

    def autostart(self):
        return True


@pytest.mark.parametrize("dest,match", [
    (Dom("other", RUNNING), "A's UUID already runs there as other"),
    (Dom("A", SHUTOFF), "A's UUID is defined there as A"),
    (Dom("tmp-A", SHUTOFF, uuid="x"), "name taken: tmp-A is there"),
])
def test_destination_conflicts_are_refused(dest, match, monkeypatch):
    monkeypatch.setattr(hop, "_host_uuid", lambda conn: str(id(conn)))
    with pytest.raises(hop_spec.Refused, match=match):
        _run(Source("A", RUNNING), dest).check("tmp-A", A_XML)


def test_a_persistent_autostarting_a_is_refused(monkeypatch):
    with pytest.raises(hop_spec.Refused, match="persistent and autostarts"):
        _run(Source("A", RUNNING, persistent=True)).check("tmp-A", A_XML)


def test_the_timeout_aborts_as_job_on_a_connection_of_its_own(monkeypatch):
    a, opened = Source("A", RUNNING), []

    class Own(Conn):
        def close(self):
            opened.append("closed")

    def fake_open(uri):
        opened.append(uri)
        return Own(a)

    a.abortJob = lambda: a.calls.append("abortJob")
    run = _run(a)
    run.source_conn.getURI = lambda: "qemu:///system"
    monkeypatch.setattr(virt, "open", fake_open)
    run.abort()
    assert (a.calls, opened, run.timed_out) == (
        ["abortJob"], ["qemu:///system", "closed"], True)


class Migrating(Source):
    """A whose migrate3 lands a running copy on ``dest`` (and A gone)."""

    def __init__(self, dest, *args):
        super().__init__(*args)
        self.dest = dest

    def XMLDesc(self, flags):  # noqa: N802
        return A_XML

    def migrate3(self, dconn, params, flags):
        self.calls.append(("migrate3", dconn, params, flags))
        self.dest.doms.append(Landed("tmp-A", RUNNING))
        self.code = None


class Landed(Dom):
    def jobStats(self, flags):  # noqa: N802
        return {"downtime": 12, "time_elapsed": 900, "memory_total": 1 << 26}


def test_the_hop_is_client_managed_on_the_callers_two_connections(
        monkeypatch):
    dest = Conn()
    dest.lookupByName = lambda name: dest.doms[0]
    monkeypatch.setattr(hop._Hop, "check", lambda self, name, xml: None)
    a = Migrating(dest, "A", RUNNING)
    result = hop.hop(Conn(a), a, dest, {"vda": NOVA}, "tmp-A",
                     formats={"vda": "qcow2"}, migrate_address="10.0.0.5",
                     incremental=True)
    (call, dconn, params, flags), = a.calls
    assert (call, dconn) == ("migrate3", dest)
    assert not flags & libvirt.VIR_MIGRATE_PEER2PEER
    assert flags & libvirt.VIR_MIGRATE_NON_SHARED_INC
    assert params["migrate_uri"] == "tcp://10.0.0.5"
    assert params["destination_name"] == "tmp-A"
    assert result.domain is dest.doms[0]
    assert (result.source_name, result.source_disks, result.source_formats,
            result.downtime_ms) == ("A", {"vda": "/dev/vg0/vol-a"},
                                    {"vda": "raw"}, 12)


def test_an_incompatible_cpu_is_refused_naming_it(monkeypatch):
    monkeypatch.setattr(hop, "_host_uuid", lambda conn: str(id(conn)))
    dest = Conn()
    dest.compareHypervisorCPU = lambda *args: \
        libvirt.VIR_CPU_COMPARE_INCOMPATIBLE
    xml = A_XML.replace("</os>", "</os><cpu mode='custom' match='exact'>"
                        "<model>Icelake-Server</model></cpu>")
    run = hop._Hop(Conn(), Source("A", RUNNING), dest)
    with pytest.raises(hop_spec.Refused,
                       match="destination host: A's CPU .Icelake-Server. "
                       "is incompatible"):
        run.check("tmp-A", xml)
