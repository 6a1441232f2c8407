"""The conductor's libvirt connection to a CloudStack KVM host.

A warm migration runs the source's block copy on the host that runs the
CloudStack VM (``[cloudstack] kvm_libvirt_uri``, '{host}' = the host's
address from CloudStack).  The host key must be verified: an URI that
turns verification off is refused here, before it is opened.

A remote connection gets libvirt keepalives (5 s, 3 missed: a dead host or
SSH session is noticed in ~20 s instead of hanging a call).  Keepalives
and the domain events a clean cutover watches need an event loop in the
process, registered before a connection opens: the default one is
registered once, lazily (:func:`cs2os_agent.virt.ensure_event_loop`), and
run on a daemon thread.  Each step opens its own
connection and closes it: nothing libvirt-side outlives a step, so a
conductor restarted between steps finds everything again by name.
"""

import contextlib
import urllib.parse

import libvirt
from oslo_log import log as logging

from cs2os_agent import virt
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.sourcehost import ssh_pin

LOG = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
# libvirt 9.0's libssh transport stalls every reply over 4 KiB (a domain's
# XML) until the next keepalive, and when our keepalive timer ends the
# stall it leaves a socket watch pointing into a returned stack frame: the
# next call on the connection segfaulted the conductor (tests/functional/
# test_kvm_ssh_transport.py).  The ssh transport runs OpenSSH instead.
_REFUSED_SCHEMES = ("libssh", "libssh2")


def _host_part(host):
    if not host or any(c in host for c in "/?#@[] "):
        raise exception.Invalid(
            reason="CloudStack gave no usable address for the KVM host "
            "(%r)" % (host,))
    return "[%s]" % host if ":" in host else host


def uri_for(template, host):
    """The libvirt URI of ``host``; refuses one without host key checks."""
    if "{host}" not in template:
        raise exception.Invalid(
            reason="[cloudstack] kvm_libvirt_uri must contain {host}")
    uri = template.replace("{host}", _host_part(host))
    parts = urllib.parse.urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    query = urllib.parse.parse_qs(parts.query)
    if transport in _REFUSED_SCHEMES:
        raise exception.Invalid(
            reason="[cloudstack] kvm_libvirt_uri uses qemu+%s://: libvirt's "
            "%s transport stalls every reply over 4 KiB until a keepalive "
            "and can crash cs2os-conductor (libvirt 9.0); use "
            "qemu+ssh://...?keyfile=KEY&known_hosts=FILE" % (transport,
                                                             transport))
    if transport == "ssh":
        if query.get("no_verify", ["0"])[-1] not in ("0", ""):
            raise exception.Invalid(
                reason="[cloudstack] kvm_libvirt_uri sets no_verify: the "
                "KVM host's key must be verified")
        if "known_hosts" in query:
            uri = _pinned(parts, query)
    return uri


def _pinned(parts, query):
    """``known_hosts=FILE``, which libvirt's ssh transport does not take,
    becomes ``command=`` an ssh that trusts that file alone (ssh_pin)."""
    if "command" in query:
        raise exception.Invalid(
            reason="[cloudstack] kvm_libvirt_uri sets both known_hosts and "
            "command: known_hosts=FILE makes the command")
    known_hosts = query.pop("known_hosts")[-1]
    query["command"] = [ssh_pin.command_for(known_hosts)]
    return urllib.parse.urlunsplit(parts._replace(
        query=urllib.parse.urlencode(query, doseq=True, safe="/")))


def redact(uri):
    """The URI for messages: scheme, user, host and path (no options)."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(parts._replace(query="", fragment=""))


class KvmHost:
    """An open libvirt connection to one KVM host."""

    def __init__(self, uri):
        self.uri = uri
        self.name = redact(uri)
        remote = "+" in urllib.parse.urlsplit(uri).scheme
        virt.ensure_event_loop()
        try:
            self.conn = virt.open(uri)
        except libvirt.libvirtError as exc:
            raise mirror_errors.KvmHostUnreachable(
                uri=self.name, reason=exc.get_error_message()) from None
        if remote:
            try:
                self.conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
            except libvirt.libvirtError:
                LOG.warning("No keepalive on %s", self.name, exc_info=True)

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
    kvm = KvmHost(uri_for(template, host))
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
