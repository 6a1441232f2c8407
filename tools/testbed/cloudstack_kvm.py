"""The hypervisor side of the CloudStack stand-in.

``LibvirtKVM`` plays the CloudStack KVM agent: it runs each VM as a
TRANSIENT libvirt domain (createXML, as LibvirtComputingResource does), named
i-<account>-<vm>-<instance.name>, with the domain uuid = the VM uuid, on the
volume file in the pool directory.  A stopped domain vanishes from libvirt;
the files stay.  The host's /mnt lives under ``root`` here, so an overlay's
header names /mnt/<pool>/<template>, which does not exist on this machine:
the backing chain is read from the headers and handed to libvirt as an
explicit <backingStore>, so nothing opens the header's path.

A data disk on RBD primary storage is a network disk, as the KVM agent
writes one: ``rbd`` <Ceph pool>/<image>, QEMU's librbd logging in as the
pool's cephx user with the key of a libvirt secret (attach_rbd_disk,
hot-plugged into the running domain as CloudStack attaches a volume).

``MemoryKVM`` keeps a running flag only, for unit tests (no process).
"""

import dataclasses
import os
import time
from xml.sax import saxutils

import libvirt

from cs2os_agent import qemu_img


class PowerError(Exception):
    """The hypervisor could not do it; the job fails with this text."""


@dataclasses.dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    disk: str  # as the KVM host names it: /mnt/<pool uuid>/<volume path>
    serial: str


class MemoryKVM:
    def __init__(self):
        self.running = set()
        # instance name -> reason: the next start of that VM fails.
        self.fail_start = {}
        self.deleted = []

    def name_taken(self, name):
        return False

    def start(self, spec):
        reason = self.fail_start.pop(spec.name, None)
        if reason:
            raise PowerError(reason)
        self.running.add(spec.name)

    def stop(self, name, forced):
        self.running.discard(name)

    def is_running(self, name):
        return name in self.running

    def delete_volume(self, disk):
        self.deleted.append(disk)

    def cleanup(self):
        self.running.clear()


_DOMAIN_XML = """<domain type='kvm'>
  <name>%(name)s</name>
  <uuid>%(uuid)s</uuid>
  <description>CloudStack stand-in VM</description>
  <memory unit='MiB'>%(memory)d</memory>
  <vcpu>%(vcpus)d</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file=%(disk)s/>
      %(backing)s
      <target dev='vda' bus='virtio'/>
      <serial>%(serial)s</serial>
    </disk>
    <serial type='file'><source path=%(console)s/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


_RBD_DISK_XML = """<disk type='network' device='disk'>
  <driver name='qemu' type='raw' cache='none'/>
  <source protocol='rbd' name=%(name)s>
    <host name=%(host)s port=%(port)s/>
  </source>
  <auth username=%(user)s>
    <secret type='ceph' uuid=%(secret)s/>
  </auth>
  <target dev=%(dev)s bus='virtio'/>
  <serial>%(serial)s</serial>
</disk>
"""


def rbd_disk_xml(pool, image, host, port, user, secret_uuid, dev, serial):
    """A volume on RBD primary storage as CloudStack's KVM agent defines
    it (LibvirtVMDef.DiskDef, a network disk): raw, cache none, one
    monitor, the cephx ``user`` whose key is libvirt secret
    ``secret_uuid`` (CloudStack's is named after the pool; any existing
    secret of usage type ceph does)."""
    q = saxutils.quoteattr
    return _RBD_DISK_XML % {
        "name": q("%s/%s" % (pool, image)), "host": q(host),
        "port": q(str(port)), "user": q(user), "secret": q(secret_uuid),
        "dev": q(dev), "serial": saxutils.escape(serial)}


class LibvirtKVM:
    def __init__(self, root, uri="qemu:///system", stop_grace=2.0):
        self.root = root
        self.stop_grace = stop_grace
        self._conn = libvirt.open(uri)
        self._created = {}  # domain name -> uuid: only these are cleaned up
        # instance name -> reason: the next stop of that VM does its work,
        # then fails (CloudStack's KVM agent timing out on a domain that
        # did end, say).
        self.fail_after_stop = {}
        self.console_dir = os.path.join(root, "consoles")
        os.makedirs(self.console_dir, mode=0o755, exist_ok=True)

    def local_path(self, host_path):
        """Where this machine keeps the KVM host's /mnt/... file."""
        if not host_path.startswith("/"):
            raise PowerError("%s is not an absolute path" % host_path)
        return os.path.join(self.root, host_path.lstrip("/"))

    def console(self, name):
        return os.path.join(self.console_dir, "%s.log" % name)

    def _backing_xml(self, path):
        """<backingStore> elements for the chain, read from the headers."""
        info = qemu_img.info(path, "qcow2", force_share=True)
        backing = info.get("full-backing-filename") or info.get(
            "backing-filename")
        if not backing:
            return "<backingStore/>"
        local = self.local_path(backing)
        fmt = info.get("backing-filename-format", "qcow2")
        inner = self._backing_xml(local) if fmt == "qcow2" else (
            "<backingStore/>")
        return ("<backingStore type='file'><format type=%s/>"
                "<source file=%s/>%s</backingStore>"
                % (saxutils.quoteattr(fmt), saxutils.quoteattr(local), inner))

    def name_taken(self, name):
        try:
            self._conn.lookupByName(name)
        except libvirt.libvirtError:
            return False
        return True

    def start(self, spec):
        disk = self.local_path(spec.disk)
        try:
            backing = self._backing_xml(disk)
        except Exception as exc:  # qemu-img's error says what is wrong
            raise PowerError("cannot read volume %s: %s"
                             % (spec.disk, exc)) from exc
        xml = _DOMAIN_XML % {
            "name": spec.name, "uuid": spec.uuid,
            "memory": spec.memory_mib, "vcpus": spec.vcpus,
            "disk": saxutils.quoteattr(disk), "backing": backing,
            "serial": saxutils.escape(spec.serial),
            "console": saxutils.quoteattr(self.console(spec.name)),
        }
        try:
            self._conn.createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise PowerError(str(exc)) from exc
        self._created[spec.name] = spec.uuid

    def attach_rbd_disk(self, name, disk_xml):
        """Hot-plug a data disk (rbd_disk_xml) into the running domain
        ``name``, as CloudStack attaches a volume to a running VM.  Live
        only: the domain is transient, and a restart by the stand-in
        starts the root disk alone."""
        dom = self._domain(name)
        if dom is None or name not in self._created:
            raise PowerError("no running domain %s of ours" % name)
        try:
            dom.attachDeviceFlags(disk_xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            raise PowerError(str(exc)) from exc

    def _domain(self, name):
        try:
            return self._conn.lookupByName(name)
        except libvirt.libvirtError:
            return None

    def stop(self, name, forced):
        dom = self._domain(name)
        if dom is None:
            return
        try:
            if not forced:
                # As the KVM agent: ask the guest, then pull the plug.
                dom.shutdown()
                deadline = time.monotonic() + self.stop_grace
                while dom.isActive() and time.monotonic() < deadline:
                    time.sleep(0.1)
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as exc:
            if self._domain(name) is not None:
                raise PowerError(str(exc)) from exc
        reason = self.fail_after_stop.pop(name, None)
        if reason:
            raise PowerError(reason)

    def is_running(self, name):
        dom = self._domain(name)
        try:
            return dom is not None and bool(dom.isActive())
        except libvirt.libvirtError:
            return False  # vanished between the two calls

    def delete_volume(self, disk):
        try:
            os.unlink(self.local_path(disk))
        except FileNotFoundError:
            pass

    def cleanup(self):
        if self._conn is None:
            return
        for name, dom_uuid in list(self._created.items()):
            dom = self._domain(name)
            if dom is not None and dom.UUIDString() == dom_uuid:
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    pass
            del self._created[name]
        self._conn.close()
        self._conn = None
