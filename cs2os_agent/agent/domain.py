"""What the agent needs to know from libvirt about a Nova instance.

libvirt itself (its setup, the state names, opening a connection) is
:mod:`cs2os_agent.virt`; the service's main calls ``virt.init()``.
"""

import dataclasses

import libvirt
from oslo_log import log as logging

from cs2os_agent import virt
from cs2os_agent.common import exception

LOG = logging.getLogger(__name__)

# The one state in which the agent may swap or restore a disk.
SHUTOFF = virt.SHUT_OFF


@dataclasses.dataclass(frozen=True)
class DomainInfo:
    name: str
    state: str  # from virt's vocabulary (virt.SHUT_OFF...)
    root_disk_path: str
    root_disk_format: str


def root_disk(domain_xml):
    """(source file, driver type) of the domain's first file disk.

    Nova attaches the root disk first; a domain whose first disk is not a
    file (RBD, LVM) is not something the qcow2 method can adopt.
    """
    root = virt.parse_xml(domain_xml)
    for disk in root.findall("./devices/disk"):
        if disk.get("device") != "disk":
            continue
        source = disk.find("source")
        driver = disk.find("driver")
        if disk.get("type") != "file" or source is None:
            return None, None
        fmt = driver.get("type") if driver is not None else None
        return source.get("file"), fmt
    return None, None


class LibvirtHost:
    """A libvirt connection per call: survives libvirtd restarts."""

    def __init__(self, uri, host):
        self._uri = uri
        self._host = host

    def _open(self):
        try:
            return virt.open(self._uri)
        except libvirt.libvirtError as exc:
            raise exception.LibvirtError(
                operation="connect to %s" % self._uri,
                reason=exc.get_error_message(),
            ) from None

    def _lookup(self, conn, instance_uuid):
        try:
            return conn.lookupByUUIDString(instance_uuid)
        except libvirt.libvirtError as exc:
            if virt.no_such_domain(exc):
                raise exception.InstanceNotFound(
                    instance_uuid=instance_uuid, host=self._host
                ) from None
            raise exception.LibvirtError(
                operation="look up %s" % instance_uuid,
                reason=exc.get_error_message(),
            ) from None

    def _read(self, instance_uuid):
        """(state, XML, name) of the instance's domain."""
        conn = self._open()
        try:
            dom = self._lookup(conn, instance_uuid)
            try:
                state, _reason = dom.state()
                return virt.state_name(state), dom.XMLDesc(0), dom.name()
            except libvirt.libvirtError as exc:
                raise exception.LibvirtError(
                    operation="read domain %s" % instance_uuid,
                    reason=exc.get_error_message(),
                ) from None
        finally:
            conn.close()

    def domain_info(self, instance_uuid):
        state, xml, name = self._read(instance_uuid)
        path, fmt = root_disk(xml)
        if not path:
            raise exception.InstanceDiskNotFound(
                instance_uuid=instance_uuid,
                reason="the domain has no file-backed root disk; cs2os "
                "needs Nova's qcow2 image backend (images_type = qcow2)",
            )
        return DomainInfo(
            name=name,
            state=state,
            root_disk_path=path,
            root_disk_format=fmt or "raw",
        )

    def domain_xml(self, instance_uuid):
        """(the domain's state, its XML): the persistent definition's
        disks while it is shut off, where Nova records an attachment."""
        state, xml, _name = self._read(instance_uuid)
        return state, xml

    def secret_value(self, secret_uuid):
        """The raw value of libvirt secret ``secret_uuid`` (a cephx key);
        None when libvirt keeps it private (``private='yes'``)."""
        conn = self._open()
        try:
            try:
                return conn.secretLookupByUUIDString(secret_uuid).value()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_INVALID_SECRET:
                    return None
                raise exception.LibvirtError(
                    operation="read secret %s" % secret_uuid,
                    reason=exc.get_error_message(),
                ) from None
        finally:
            conn.close()

    def version(self):
        conn = self._open()
        try:
            return conn.getLibVersion()
        finally:
            conn.close()
