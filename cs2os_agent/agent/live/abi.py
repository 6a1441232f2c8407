"""B's live XML: A's guest ABI with Nova's identity, and the parity check.

QEMU loads a migration stream only into a guest built exactly like the
one that sent it: same machine type, CPU, memory, devices and their
slots.  A device A has and B lacks ends B's load with ``Unknown savevm
section or instance '0000:00:04.0/virtio-balloon'`` (recipes/live-into-
nova); A's QEMU still reports the migration ``completed``.  So B's *live*
XML (the one in the save-image header) is A's migratable XML with only
what the guest cannot see replaced by Nova's values:

- name, UUID, title, description, metadata (Nova finds its domain by the
  instance UUID);
- ``<sysinfo>`` (the guest keeps A's SMBIOS tables in its RAM until it
  cold-boots) and the UEFI NVRAM path;
- each disk's host side (type, ``<source>``, ``<backingStore>``, the
  driver's format and cache), matched by target dev;
- each NIC's backend (type, ``<source>``, ``<target>``, ``<virtualport>``,
  ``<bandwidth>``), matched by MAC: the guest keeps A's model and MAC,
  which Nova's Neutron port carries;
- serial ports, consoles and channels' backends (file, pty, log, socket),
  matched by target;
- ``<graphics>`` (host-side only: no guest device).

Nova's persistent XML is left as Nova wrote it: the next hard reboot or
stop/start cold-boots the guest on Nova's devices.  Every device of A
needing a host side that Nova's domain lacks is refused, naming it.
"""

import copy
from xml.etree import ElementTree

from cs2os_agent import virt
from cs2os_agent.agent.live import errors

ElementTree.register_namespace(
    "nova", "http://openstack.org/xmlns/libvirt/nova/1.1")

# Children of <devices> that are no guest device (or not one of A's that
# the stream carries): not compared.
_NOT_GUEST_DEVICES = {"emulator", "graphics", "audio", "lease"}
_CHAR_DEVICES = ("serial", "console", "channel", "parallel")
_DISK_HOST_ATTRS = ("type", "cache", "io", "discard", "detect_zeroes")
_NIC_BACKEND = ("source", "target", "virtualport", "bandwidth", "script",
                "ip", "route", "backend")
_CHAR_BACKEND = ("source", "log", "protocol")


def _refuse(reason):
    return errors.LiveMoveRefused(reason=reason)


def _parse(xml, whose):
    try:
        return virt.parse_xml(xml)
    except ElementTree.ParseError as exc:
        raise _refuse("%s XML does not parse: %s" % (whose, exc)) from None


def _replace_child(parent, tag, source, before=None):
    """``parent``'s ``tag`` children replaced by copies of ``source``'s."""
    for old in parent.findall(tag):
        parent.remove(old)
    if source is None:
        return
    new = [copy.deepcopy(el) for el in source.findall(tag)]
    index = len(parent)
    if before is not None:
        for i, child in enumerate(parent):
            if child.tag in before:
                index = i
                break
    for offset, el in enumerate(new):
        parent.insert(index + offset, el)


def _target_dev(disk):
    target = disk.find("target")
    return target.get("dev") if target is not None else None


def _mac(nic):
    mac = nic.find("mac")
    return (mac.get("address") or "").lower() if mac is not None else ""


def _char_key(el):
    target = el.find("target")
    target = target if target is not None else ElementTree.Element("target")
    if el.tag == "channel":
        return (el.tag, target.get("type"), target.get("name"))
    return (el.tag, target.get("type"), target.get("port", "0"))


def _describe_char(key):
    tag, kind, which = key
    return " ".join(part for part in (tag, kind, which) if part)


def _rewrite_disks(a_devices, n_devices):
    nova = {_target_dev(d): d for d in n_devices.findall("disk")}
    for disk in a_devices.findall("disk"):
        dev = _target_dev(disk)
        theirs = nova.get(dev)
        if theirs is None:
            raise _refuse("A's %s %s has no disk with target dev %s in "
                          "Nova's domain" % (disk.get("device", "disk"),
                                             dev, dev))
        disk.set("type", theirs.get("type", "file"))
        for tag in ("mirror", "source", "backingStore", "auth"):
            for old in disk.findall(tag):
                disk.remove(old)
        driver, their_driver = disk.find("driver"), theirs.find("driver")
        if driver is not None and their_driver is not None:
            for attr in _DISK_HOST_ATTRS:
                if attr in their_driver.attrib:
                    driver.set(attr, their_driver.get(attr))
                else:
                    driver.attrib.pop(attr, None)
        at = 1 if driver is not None else 0
        for tag in ("auth", "source", "backingStore"):
            for el in theirs.findall(tag):
                disk.insert(at, copy.deepcopy(el))
                at += 1


def _rewrite_nics(a_devices, n_devices):
    nova = {_mac(n): n for n in n_devices.findall("interface")}
    for nic in a_devices.findall("interface"):
        theirs = nova.get(_mac(nic))
        if theirs is None:
            raise _refuse("A's interface with MAC %s has no interface with "
                          "that MAC in Nova's domain (its Neutron port must "
                          "carry A's MAC)" % (_mac(nic) or "(none)"))
        nic.set("type", theirs.get("type"))
        for tag in _NIC_BACKEND:
            _replace_child(nic, tag, theirs, before=("model",))


def _rewrite_chardevs(a_devices, n_devices):
    nova = {}
    for el in n_devices:
        if el.tag in _CHAR_DEVICES:
            nova.setdefault(_char_key(el), el)
    for el in a_devices:
        if el.tag not in _CHAR_DEVICES:
            continue
        theirs = nova.get(_char_key(el))
        if theirs is None:
            raise _refuse("A's %s has no counterpart in Nova's domain"
                          % _describe_char(_char_key(el)))
        el.set("type", theirs.get("type"))
        for tag in _CHAR_BACKEND:
            _replace_child(el, tag, theirs, before=("target",))


def _rewrite_identity(a, n):
    for tag in ("name", "uuid"):
        if n.find(tag) is None or not (n.find(tag).text or "").strip():
            raise _refuse("Nova's domain XML has no <%s>" % tag)
        a.find(tag).text = n.find(tag).text.strip()
    for tag in ("title", "description", "metadata", "sysinfo"):
        _replace_child(a, tag, n, before=("memory", "os", "devices"))
    a_os, n_os = a.find("os"), n.find("os")
    if a_os is not None:
        _replace_child(a_os, "smbios", n_os if n.find("sysinfo") is not None
                       else None)
        if a_os.find("nvram") is not None:
            if n_os is None or n_os.find("nvram") is None:
                raise _refuse("A boots with UEFI NVRAM; Nova's domain has no "
                              "<nvram> for it")
            _replace_child(a_os, "nvram", n_os)


def live_xml(a_migratable_xml, nova_xml):
    """B's live XML: A's ABI (its migratable XML) with Nova's identity.

    Raises :class:`errors.LiveMoveRefused` naming the first device of A
    that needs a host side Nova's domain does not have.
    """
    a = _parse(a_migratable_xml, "A's")
    n = _parse(nova_xml, "Nova's")
    a_devices = a.find("devices")
    n_devices = n.find("devices")
    if a_devices is None or n_devices is None:
        raise _refuse("a domain XML without <devices>")
    _rewrite_identity(a, n)
    _rewrite_disks(a_devices, n_devices)
    _rewrite_nics(a_devices, n_devices)
    _rewrite_chardevs(a_devices, n_devices)
    _replace_child(a_devices, "graphics", n_devices,
                   before=("video", "memballoon"))
    return ElementTree.tostring(a, encoding="unicode")


def cookie(a_live_xml):
    """libvirt's save cookie: A's live ``<cpu>`` (the CPU QEMU runs), or ""
    when A's XML has none (QEMU's default CPU)."""
    cpu = _parse(a_live_xml, "A's").find("cpu")
    if cpu is None:
        return ""
    return "<cookie>%s</cookie>" % ElementTree.tostring(
        cpu, encoding="unicode").strip()


# -- parity ------------------------------------------------------------------


def _address(el):
    addr = el.find("address")
    if addr is None:
        return ""
    return " at %s" % " ".join("%s=%s" % kv for kv in sorted(addr.items()))


def _model(el):
    model = el.find("model")
    if model is not None:
        return model.get("type") or model.get("name") or model.text or ""
    return el.get("model") or el.get("type") or ""


def _device_key(el):
    """A guest device's identity: what it is and where the guest sees it."""
    if el.tag == "disk":
        target = el.find("target")
        what = "%s %s bus=%s" % (el.get("device", "disk"), _target_dev(el),
                                 target.get("bus") if target is not None
                                 else "")
    elif el.tag == "interface":
        what = "interface %s model=%s" % (_mac(el), _model(el))
    elif el.tag in _CHAR_DEVICES:
        what = _describe_char(_char_key(el))
    elif el.tag == "controller":
        what = "controller %s index=%s model=%s" % (
            el.get("type"), el.get("index"), el.get("model", ""))
    else:
        what = "%s %s" % (el.tag, _model(el))
    return what.strip() + _address(el)


def _guest_devices(root):
    devices = root.find("devices")
    keys = set()
    for el in devices if devices is not None else ():
        if el.tag in _NOT_GUEST_DEVICES:
            continue
        if el.tag == "memballoon" and el.get("model") == "none":
            continue
        if el.tag == "console" and _char_key(el)[1] == "serial":
            continue  # the serial port's alias, no device of its own
        keys.add(_device_key(el))
    return keys


def _machine(root):
    os_type = root.find("os/type")
    return (os_type.get("arch"), os_type.get("machine")) \
        if os_type is not None else (None, None)


def _text(root, path):
    el = root.find(path)
    return (el.text or "").strip() if el is not None else ""


def check_parity(a_xml, b_live_xml):
    """Refuse unless B's live XML has every guest device and the machine,
    memory, vCPUs and CPU model of A's (names the first difference)."""
    a = _parse(a_xml, "A's")
    b = _parse(b_live_xml, "B's live")
    for what, fetch in (("machine", _machine),
                        ("memory", lambda r: _text(r, "memory")),
                        ("vCPUs", lambda r: _text(r, "vcpu")),
                        ("CPU model", lambda r: _text(r, "cpu/model"))):
        if fetch(a) != fetch(b):
            raise _refuse("B's %s %r differs from A's %r: QEMU would not load "
                          "A's state" % (what, fetch(b), fetch(a)))
    missing = sorted(_guest_devices(a) - _guest_devices(b))
    if missing:
        raise _refuse("B's live XML lacks A's %s (and %d more): QEMU would "
                      "refuse A's state (Unknown savevm section)"
                      % (missing[0], len(missing) - 1))
