"""What the live move depends on, checked before anything changes.

Each check refuses with :class:`errors.LiveMoveRefused` naming what it
found; none of them touches A or B (A gets no QMP command here: libvirt
would mark it tainted).  The checks:

- libvirt and QEMU at least the versions the move was verified on
  (libvirt 9.0.0, QEMU 7.2: recipes/live-into-nova);
- A running, B defined and shut off, under another name and UUID;
- the save-image header: this libvirt must read the header the move will
  write.  It is written to a file (header only, no stream) and read back
  with ``virDomainSaveImageGetXMLDesc``: libvirt parses B's live XML from
  it, so a libvirt that changed the format, or an XML it rejects, is
  refused here and not after A's state was sent;
- the machine type of A is one this host's QEMU provides;
- A's CPU against this host's hypervisor (``virConnectCompareHypervisorCPU``):
  an incompatible CPU is refused.  A host-passthrough CPU cannot be
  compared: it is accepted only when A runs on this same libvirtd (the
  same-host move), across hosts libvirt's own migration (the first hop)
  checks it;
- device parity: B's live XML has every guest device of A
  (:func:`.abi.check_parity`).
"""

import dataclasses
import os
from xml.etree import ElementTree

import libvirt

from cs2os_agent import virt
from cs2os_agent.agent.live import abi
from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import header

MIN_LIBVIRT = (9, 0, 0)
MIN_QEMU = (7, 2, 0)


@dataclasses.dataclass(frozen=True)
class Report:
    libvirt_version: str
    qemu_version: str
    cpu: str  # how A's CPU compared
    machine: str


def _version(number):
    return (number // 1000000, number // 1000 % 1000, number % 1000)


def _dotted(version):
    return ".".join(str(n) for n in version)


def _refuse(reason):
    return errors.LiveMoveRefused(reason=reason)


def check_versions(conn):
    try:
        lib = _version(conn.getLibVersion())
        qemu = _version(conn.getVersion())
    except libvirt.libvirtError as exc:
        raise _refuse("cannot read libvirt's versions: %s"
                      % exc.get_error_message()) from None
    if lib < MIN_LIBVIRT:
        raise _refuse("libvirt %s is older than %s, the oldest the move was "
                      "verified on" % (_dotted(lib), _dotted(MIN_LIBVIRT)))
    if qemu < MIN_QEMU:
        raise _refuse("QEMU %s is older than %s, the oldest the move was "
                      "verified on" % (_dotted(qemu), _dotted(MIN_QEMU)))
    return _dotted(lib), _dotted(qemu)


def check_states(source, target):
    if virt.state(source) != virt.RUNNING:
        raise _refuse("A (%s) is %s, not running"
                      % (source.name(), virt.state(source)))
    if virt.state(target) != virt.SHUT_OFF:
        raise _refuse("B (%s) is %s: Nova's domain must be defined and shut "
                      "off" % (target.name(), virt.state(target)))
    if source.UUIDString() == target.UUIDString():
        raise _refuse("A and B have the same UUID %s" % source.UUIDString())
    if source.name() == target.name():
        raise _refuse("A and B have the same name %s" % source.name())


def check_header(conn, live_xml, cookie, target, work_dir):
    """libvirt reads our header back as B (name and UUID)."""
    path = os.path.join(work_dir, "probe.hdr")
    data = header.SaveHeader(xml=live_xml, cookie=cookie).to_bytes()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        xml = conn.saveImageGetXMLDesc(path, 0)
    except libvirt.libvirtError as exc:
        raise _refuse("this libvirt does not read the save-image header "
                      "(version %d, raw) with B's live XML: %s"
                      % (header.VERSION, exc.get_error_message())) from None
    finally:
        os.unlink(path)
    root = virt.parse_xml(xml)
    found = (root.findtext("name"), root.findtext("uuid"))
    if found != (target.name(), target.UUIDString()):
        raise _refuse("libvirt read the probe header as %s/%s, not B's "
                      "%s/%s" % (found + (target.name(),
                                          target.UUIDString())))


def _guest_machines(conn, arch):
    caps = virt.parse_xml(conn.getCapabilities())
    names = set()
    for guest in caps.findall("guest"):
        a = guest.find("arch")
        if a is None or a.get("name") != arch:
            continue
        for m in a.iter("machine"):
            names.add((m.text or "").strip())
            if m.get("canonical"):
                names.add(m.get("canonical"))
    return names


def check_machine(conn, a_root):
    os_type = a_root.find("os/type")
    arch, machine = os_type.get("arch"), os_type.get("machine")
    if machine not in _guest_machines(conn, arch):
        raise _refuse("this host's QEMU has no machine type %s (%s) that A "
                      "runs" % (machine, arch))
    return machine


def check_cpu(conn, a_root, same_host):
    cpu = a_root.find("cpu")
    if cpu is None:
        return "QEMU's default CPU"
    if cpu.get("mode") == "host-passthrough":
        if same_host:
            return "host-passthrough on the same host"
        raise _refuse("A's CPU is host-passthrough: it cannot be compared "
                      "with this host's; move it here with libvirt's "
                      "migration first")
    cpu_xml = ElementTree.tostring(cpu, encoding="unicode")
    try:
        result = conn.compareHypervisorCPU(
            None, a_root.find("os/type").get("arch"),
            a_root.find("os/type").get("machine"), a_root.get("type"),
            cpu_xml, 0)
    except libvirt.libvirtError as exc:
        raise _refuse("cannot compare A's CPU with this host's: %s"
                      % exc.get_error_message()) from None
    if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
        raise _refuse("A's CPU (%s) is incompatible with this host's"
                      % (cpu.findtext("model") or cpu.get("mode")))
    return {libvirt.VIR_CPU_COMPARE_IDENTICAL: "identical",
            libvirt.VIR_CPU_COMPARE_SUPERSET: "host is a superset"}.get(
                result, "compatible (%d)" % result)


def check(conn, source, target, a_live_xml, a_migratable_xml, live_xml,
          cookie, work_dir, same_host=True):
    """Every check above, in order; returns a :class:`Report`."""
    lib, qemu = check_versions(conn)
    check_states(source, target)
    abi.check_parity(a_migratable_xml, live_xml)
    a_root = virt.parse_xml(a_live_xml)
    machine = check_machine(conn, a_root)
    cpu = check_cpu(conn, a_root, same_host)
    check_header(conn, live_xml, cookie, target, work_dir)
    return Report(libvirt_version=lib, qemu_version=qemu, cpu=cpu,
                  machine=machine)
