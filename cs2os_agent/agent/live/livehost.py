"""The live RPC's look-ups: this host's libvirtd, the KVM host's, T.

Small pieces ``agent/live_rpc.py`` needs around :mod:`.hop` and
:mod:`.move`: the two connections (this host's, ``[libvirt]
connection_uri``; the KVM host's, ``[live] kvm_libvirt_uri``), where the
temporary domain is, whether Nova's disk is this migration's swapped-in
T, and the hop's record (:mod:`.state`) to and from a HopResult.
"""

import json
import os
import re

import libvirt
from oslo_log import log as logging

from cs2os_agent import kvmuri
from cs2os_agent import virt
from cs2os_agent.agent import overlay
from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import hop
from cs2os_agent.common import exception

LOG = logging.getLogger(__name__)

_CHAR_DEVICES = ("serial", "console", "channel", "parallel")


def _refused(reason):
    return exception.LiveRefused(reason=reason)


def temp_name(migration_id):
    """``cs2os-live-<first 8 of the migration id>``: the hop's domain."""
    return "cs2os-live-%s" % re.sub(r"[^A-Za-z0-9_-]", "-",
                                    str(migration_id)[:8])


def wait_seconds(value, cap):
    """The gate's wait: the call's, at most ``[live] move_wait_seconds``."""
    if value is None:
        return cap
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or value <= 0:
        raise exception.Invalid(reason="wait_seconds must be a positive "
                                "number of seconds, not %r" % (value,))
    return min(value, cap)


class _Conn:
    def __init__(self, uri):
        self.uri, self.conn = uri, None

    def _connect(self):
        return virt.open(self.uri)

    def open(self):
        try:
            self.conn = self._connect()
        except libvirt.libvirtError as exc:
            raise self.unreachable(errors.libvirt_message(exc)) from None
        return self

    def unreachable(self, message):
        return exception.LibvirtError(operation="connect to %s" % self.uri,
                                      reason=message)

    def close(self):
        self.conn = virt.close_quietly(self.conn)

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()


class Kvm(_Conn):
    """The CloudStack KVM host's libvirtd, where A runs: the URI checked
    (host key verified) and kept alive as the conductor's (kvmuri)."""

    def __init__(self, conf, host):
        super().__init__(kvmuri.uri_for(conf.live.kvm_libvirt_uri, host,
                                        option="[live] kvm_libvirt_uri"))
        self.host = host

    def _connect(self):
        return kvmuri.open_host(self.uri)

    def unreachable(self, message):
        return _refused("cannot open the KVM host %s's libvirtd: %s"
                        % (self.host, message))

    def domain(self, name):
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            raise _refused("no domain %s on the KVM host %s: %s" % (
                name, self.host, errors.libvirt_message(exc))) from None


class Local(_Conn):
    """This host's libvirtd (Nova's), where T, B and the hop's domain are."""

    def __init__(self, conf):
        super().__init__(conf.libvirt.connection_uri)

    def _by_uuid(self, uuid):
        try:
            return self.conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError:
            return None

    def temp_domain(self, hop_rec):
        """The hop's temporary domain if it runs here, else None."""
        dom = self._by_uuid(hop_rec["uuid"])
        if dom is None or dom.name() != hop_rec["temp_domain"] or \
                virt.state(dom) != virt.RUNNING:
            return None
        return dom

    def moved(self, instance_uuid, hop_rec):
        """B runs and the temporary domain is gone: the move finished."""
        b = self._by_uuid(instance_uuid)
        return b is not None and virt.state(b) == virt.RUNNING and \
            self._by_uuid(hop_rec["uuid"]) is None

    def hopped_earlier(self, record, instance_uuid):
        """The first live_hop's result if its guest is still here (as the
        temporary domain, or moved into B), else None."""
        hop_rec = record.get("hop")
        if hop_rec is None or record.get("instance_uuid") != instance_uuid:
            return None
        if (record.get("move") or {}).get("outcome") == "running" or \
                self.temp_domain(hop_rec) is not None:
            return hop_rec["result"]
        return None

    def refuse_unrecorded(self, name):
        """A domain ``name`` running here that no record names: a hop
        whose record was lost (the agent died right after it).  Its undo
        needs A's paths on the KVM host, which only the record had."""
        try:
            dom = self.conn.lookupByName(name)
        except libvirt.libvirtError:
            return
        raise exception.LiveIncomplete(
            reason="%s (UUID %s) runs here but this agent has no record of "
            "its hop: the guest runs in it; an operator must move it back "
            "to the KVM host (virsh migrate) or on" % (name,
                                                      dom.UUIDString()))

    def refuse_if_moved(self, instance_uuid, hop_rec):
        if self.moved(instance_uuid, hop_rec):
            raise _refused("the guest runs in Nova's domain %s now: there is "
                           "no temporary domain to hop back" % instance_uuid)


def _staged_meta(files, migration_id):
    try:
        with open(files.staged_meta) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if meta.get("migration_id") != migration_id or \
            (meta.get("source") or {}).get("transport") != "live":
        return None
    return meta


def staged_target(files, migration_id):
    """prepare_live_target's result if T of this migration is staged or
    swapped in, else None."""
    meta = _staged_meta(files, migration_id)
    if meta is None or not (os.path.exists(files.staged)
                            or os.path.exists(files.orig)):
        return None
    return meta


def require_swapped(files, migration_id):
    """Nova's ``disk`` must be this migration's T (swap_disk done)."""
    if _staged_meta(files, migration_id) is None or \
            not os.path.exists(files.orig) or os.path.exists(files.staged):
        raise _refused("Nova's disk %s is not migration %s's live target: "
                       "call prepare_live_target and swap_disk first"
                       % (files.disk, migration_id))


def root_dev(dom):
    """A's first disk's target dev (its root disk)."""
    for disk in virt.domain_xml(dom).findall("devices/disk"):
        if disk.get("device", "disk") == "disk":
            return disk.find("target").get("dev")
    raise _refused("%s has no disk" % dom.name())


def console_files(dom, files):
    """A's file-backed character devices (console logs), each onto a file
    in the instance directory: A's paths are the KVM host's."""
    mapping = {}
    for el in virt.domain_xml(dom).find("devices"):
        if el.tag not in _CHAR_DEVICES:
            continue
        paths = [el.find("log").get("file")] if el.find("log") is not None \
            else []
        if el.get("type") == "file" and el.find("source") is not None:
            paths.append(el.find("source").get("path"))
        for path in paths:
            if path and path not in mapping:
                mapping[path] = os.path.join(
                    files.instance_dir,
                    "console.cs2os-live-%d.log" % len(mapping))
    return mapping


def hop_record(result, source):
    """What live_hop returns and live_hop_back needs, for the record."""
    dom = result.domain
    return {
        "temp_domain": dom.name(), "uuid": dom.UUIDString(),
        "source": dict(source), "source_name": result.source_name,
        "source_disks": result.source_disks,
        "source_formats": result.source_formats,
        "source_files": result.source_files,
        "result": {"temp_domain": dom.name(), "uuid": dom.UUIDString(),
                   "downtime_ms": result.downtime_ms,
                   "elapsed_ms": result.elapsed_ms,
                   "memory_bytes": result.memory_bytes,
                   "seconds": round(result.seconds, 3),
                   "consoles": {v: k for k, v in
                                result.source_files.items()}},
    }


def hop_result(dom, hop_rec):
    """A HopResult for hop.hop_back from the record."""
    return hop.HopResult(
        domain=dom, source_name=hop_rec["source_name"],
        source_disks=hop_rec["source_disks"],
        source_formats=hop_rec["source_formats"],
        source_files=hop_rec["source_files"], downtime_ms=None,
        elapsed_ms=None, memory_bytes=None, seconds=0.0)


def nova_root_size(info, files, instance_uuid):
    """The size Nova gave the instance's root disk (its original's, kept
    as ``orig`` after the swap)."""
    return overlay.reference_for(files, info.root_disk_format,
                                 instance_uuid).virtual_size


def grow_disk(dom, path, size):
    """Grow running B's disk on ``path`` to Nova's ``size`` (the hop
    needed T at A's size): online, as a volume extend, so the guest sees
    the capacity change, not a new disk.  B runs the guest by then: a
    failure here must not read as a failed move (that would roll back a
    guest that already moved), so whatever goes wrong is logged, not
    raised; the disk then keeps A's size, as the guest knew it."""
    try:
        for disk in virt.domain_xml(dom).findall("devices/disk"):
            source = disk.find("source")
            if source is None or source.get("file") != path:
                continue
            dev = disk.find("target").get("dev")
            if dom.blockInfo(path)[0] < size:
                dom.blockResize(dev, size,
                                libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                LOG.info("Grew %s of %s to %d bytes (Nova's root disk)",
                         dev, dom.name(), size)
            return
        LOG.warning("%s has no disk on %s to grow", dom.name(), path)
    except libvirt.libvirtError as exc:
        LOG.warning("Could not grow the disk %s of the moved guest to %d "
                    "bytes: %s", path, size, errors.libvirt_message(exc))
    except Exception:  # noqa: BLE001 - see above: never fail the move now
        LOG.exception("Could not grow the disk %s of the moved guest to %d "
                      "bytes", path, size)
