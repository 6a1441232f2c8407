"""The conductor's libvirt connection to a CloudStack KVM host.

A warm migration runs the source's block copy on the host that runs the
CloudStack VM (``[cloudstack] kvm_libvirt_uri``, '{host}' = the host's
address from CloudStack).  The host key must be verified: an URI that
turns verification off is refused here, before it is opened.

The URI's checks and the connection's keepalives are
:mod:`cs2os_agent.kvmuri`'s (the agent's live hop opens KVM hosts too).
The domain events a clean cutover watches need the event loop that
:func:`cs2os_agent.virt.ensure_event_loop` registers.  Each step opens its own
connection and closes it: nothing libvirt-side outlives a step, so a
conductor restarted between steps finds everything again by name.
"""

import contextlib

import libvirt
from oslo_log import log as logging

from cs2os_agent import kvmuri
from cs2os_agent import virt
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors

LOG = logging.getLogger(__name__)

class KvmHost:
    """An open libvirt connection to one KVM host."""

    def __init__(self, uri):
        self.uri = uri
        self.name = kvmuri.redact(uri)
        try:
            self.conn = kvmuri.open_host(uri)
        except libvirt.libvirtError as exc:
            raise mirror_errors.KvmHostUnreachable(
                uri=self.name, reason=exc.get_error_message()) from None

    def close(self):
        self.conn = virt.close_quietly(self.conn)

    def domain(self, name):
        """The running or paused domain ``name``."""
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if virt.no_such_domain(exc):
                raise mirror_errors.SourceDomainNotFound(
                    domain=name, uri=self.name) from None
            raise mirror_errors.KvmHostUnreachable(
                uri=self.name, reason=exc.get_error_message()) from None


@contextlib.contextmanager
def connect(conf, host):
    template = conf.cloudstack.kvm_libvirt_uri
    kvm = KvmHost(kvmuri.uri_for(template, host))
    try:
        yield kvm
    finally:
        kvm.close()


def root_disk(dom, pool_id, volume_path):
    """The target (``vda``) of the disk whose file is the root volume.

    CloudStack names the file /mnt/<pool uuid>/<volume path> on the host;
    the match is on that tail, the part that names the volume.
    """
    tail = "/%s/%s" % (pool_id, volume_path.lstrip("/"))

    def matches(disk, source):
        path = source.get("file") or source.get("dev") or ""
        return path.endswith(tail)

    return _only_target(dom, matches, "disks on ...%s" % tail)


def rbd_disk(dom, ceph_pool, image):
    """The target (``vdb``...) of the network disk that is RBD image
    ``image`` of Ceph pool ``ceph_pool``.

    CloudStack's KVM agent writes a volume on RBD primary storage as
    ``<disk type='network'><source protocol='rbd' name='<pool>/<image>'>``
    (LibvirtVMDef.DiskDef.defNetworkBasedDisk): the pool is the storage
    pool's ``path``, the image the volume's ``path``.  The whole name must
    match: a tail would also match an image of another pool.
    """
    name = "%s/%s" % (ceph_pool, image)

    def matches(disk, source):
        return (disk.get("type") == "network"
                and source.get("protocol") == "rbd"
                and source.get("name") == name)

    return _only_target(dom, matches, "RBD disks %s" % name)


def _only_target(dom, matches, what):
    found = []
    for disk in virt.domain_xml(dom).findall("./devices/disk[@device='disk']"):
        source = disk.find("source")
        target = disk.find("target")
        if source is None or target is None:
            continue
        if matches(disk, source):
            found.append(target.get("dev"))
    if len(found) != 1:
        raise exception.Invalid(
            reason="domain %s has %d %s; expected exactly one"
            % (dom.name(), len(found), what))
    return found[0]


def mirror_export(dom, disk):
    """The NBD export name a block copy on ``disk`` writes to, or None."""
    for d in virt.domain_xml(dom).findall("./devices/disk"):
        target = d.find("target")
        if target is None or target.get("dev") != disk:
            continue
        mirror = d.find("mirror")
        if mirror is None:
            return None
        source = mirror.find("source")
        return source.get("name") if source is not None else ""
    return None
