"""What the first hop asks libvirt for: flags, params, destination XML.

The flags (:func:`migrate_flags`), and why:

- ``LIVE``: the guest runs on while its RAM is copied;
- no ``PEER2PEER``: the agent holds both connections (A's libvirtd,
  remote; the Nova host's, local) and drives the protocol between them
  (``virDomainMigrate3``), so A's libvirtd never needs credentials for
  the Nova host's.  An agent dying midway is not left to chance: each
  libvirtd cleans up a migration whose client connection closed between
  the phases (the source cancels it and resumes A, the destination kills
  its incoming QEMU), and the hop checks who holds the guest after any
  error;
- ``NON_SHARED_DISK``: every guest-visible block is mirrored (NBD) into
  the caller's pre-created file, whatever that file's backing holds; Nova
  may already have booted the file once.  ``NON_SHARED_INC``
  (``incremental=True``) copies A's top layer only: right only when the
  destination file is an overlay on a base identical to A's backing;
- ``ABORT_ON_ERROR``: an I/O error during the copy cancels the migration
  instead of going on with a guest paused on it;
- ``AUTO_CONVERGE`` only on request: it throttles the guest's vCPUs;
- never ``PERSIST_DEST``: the temporary domain stays transient (the
  recipe's trap: a persistent config with another UUID is accepted and
  breaks at the next libvirtd restart); never ``UNDEFINE_SOURCE``: a
  persistent A keeps its definition, shut off, until the whole move has
  succeeded (the caller undefines it then).  A transient A (CloudStack's
  way) is gone from the source once the hop succeeded.

Params (:func:`migrate_params`): ``DEST_NAME`` (the temporary name;
``DEST_XML`` keeps A's name: libvirt refuses any other), ``DEST_XML``
(:func:`dest_xml`), ``MIGRATE_DISKS``, and with ``migrate_address`` the
data connections' address (``URI`` and ``LISTEN_ADDRESS``: the Nova
host's QEMU listens there only, for the RAM stream and the NBD disk
server alike), ``BANDWIDTH`` if given (MiB/s; libvirt's default is
unlimited, for the RAM and the disk copy).
"""

from xml.etree import ElementTree

import libvirt

from cs2os_agent import virt
from cs2os_agent.agent.live import errors

_message = errors.libvirt_message

_CHAR_DEVICES = ("serial", "console", "channel", "parallel")


def migrate_flags(incremental=False, auto_converge=False):
    flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    flags |= (libvirt.VIR_MIGRATE_NON_SHARED_INC if incremental
              else libvirt.VIR_MIGRATE_NON_SHARED_DISK)
    if auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    return flags


def migrate_params(xml, temp_name, disks, migrate_address=None,
                   bandwidth_mib=None):
    params = {libvirt.VIR_MIGRATE_PARAM_DEST_NAME: temp_name,
              libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml,
              libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: sorted(disks)}
    if migrate_address:
        host = "[%s]" % migrate_address if ":" in migrate_address \
            else migrate_address  # an IPv6 address in a URI
        params[libvirt.VIR_MIGRATE_PARAM_URI] = "tcp://%s" % host
        params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = migrate_address
    if bandwidth_mib:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth_mib)
    return params


class Refused(Exception):
    """A reason the hop cannot start (hop.py raises it as HopRefused)."""


def dest_xml(a_xml, dest_disks, formats=None, files=None):
    """A's migratable XML with each disk in ``dest_disks`` (target dev ->
    path) at its destination path (format from ``formats`` if given, else
    A's) and each file-backed character device path in ``files`` (path on
    A -> path on the destination) replaced.  Name and UUID stay A's.  A
    disk with a source but no destination path is refused."""
    root = virt.parse_xml(a_xml)
    wanted = dict(dest_disks)
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        source = disk.find("source")
        if dev not in wanted:
            if source is not None and source.attrib:
                raise Refused("A's %s %s has no destination path"
                              % (disk.get("device", "disk"), dev))
            continue
        for tag in ("source", "backingStore", "mirror"):
            for el in disk.findall(tag):
                disk.remove(el)
        path = wanted.pop(dev)
        # LVM and other block devices (CloudStack's CLVM) are type block
        kind = "block" if path.startswith("/dev/") else "file"
        disk.set("type", kind)
        driver = disk.find("driver")
        if driver is not None and formats and dev in formats:
            driver.set("type", formats[dev])
        attr = "dev" if kind == "block" else "file"
        new = ElementTree.Element("source", {attr: path})
        disk.insert(list(disk).index(driver) + 1 if driver is not None
                    else 0, new)
    if wanted:
        raise Refused("A has no disk with target dev %s"
                      % ", ".join(sorted(wanted)))
    for el in root.find("devices"):
        if el.tag not in _CHAR_DEVICES:
            continue
        for child, attr in (("source", "path"), ("log", "file")):
            node = el.find(child)
            if node is not None and node.get(attr) in (files or {}):
                node.set(attr, files[node.get(attr)])
    return ElementTree.tostring(root, encoding="unicode")


def classify(exc):
    """A reason when libvirt refused before the guest moved, else None."""
    code, text = exc.get_error_code(), _message(exc)
    if code == libvirt.VIR_ERR_CPU_INCOMPATIBLE:
        return "CPU incompatible with the destination host: %s" % text
    if code == libvirt.VIR_ERR_NO_STORAGE_POOL or "No such file" in text:
        return ("a destination disk path is missing (the caller creates "
                "each before the hop): %s" % text)
    if "Failed to connect to remote libvirt" in text:
        return "destination unreachable from A's libvirtd: %s" % text
    if "already exists" in text:
        return "name taken on the destination: %s" % text
    return None
