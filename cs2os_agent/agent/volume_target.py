"""Where Nova attached a Cinder volume, as the domain XML says.

Nova writes one ``<disk>`` per attached volume, its ``<serial>`` the
Cinder volume id, whatever the instance's state: a volume attached to a
stopped server is in its persistent definition.  The agent writes a data
disk where that element points, so it needs no Cinder attachment of its
own and no kernel block device:

- ``network``/``rbd`` (Cinder's RBD driver): QEMU's librbd driver opens
  ``pool/volume-<id>`` on the monitors the element lists, as the cephx
  user of its ``<auth>``; the key is that user's libvirt secret (Nova and
  DevStack define it ``private='no'``) or, for a private one, the keyring
  in ``[agent] ceph_keyring_dir``;
- ``block`` (iSCSI, FC, LVM): the host block device;
- ``file`` (Cinder's NFS drivers): the file.

:func:`qemu_target` turns it into what qemu-img opens: a ``json:``
filename (no escaping of commas as in ``--image-opts``) whose key is a
``--object secret`` read from a 0600 file, never a command-line argument.
"""

import configparser
import dataclasses
import json
import os

from cs2os_agent import virt
from cs2os_agent.common import exception

SECRET_ID = "cs2os-volume-key"  # noqa: S105 - an object id, no secret


@dataclasses.dataclass(frozen=True)
class VolumeTarget:
    volume_id: str
    kind: str  # rbd, block or file
    path: str  # rbd: pool/image; else the host path
    fmt: str  # the driver type Nova gave the disk: raw, or qcow2 (NFS)
    hosts: tuple = ()  # rbd: ((host, port), ...)
    user: str = None  # rbd: the cephx user
    secret_uuid: str = None  # rbd: its libvirt secret
    target_dev: str = None  # vdb...: the guest's name for it

    def describe(self):
        where = "rbd:%s" % self.path if self.kind == "rbd" else self.path
        return "volume %s (%s, %s)" % (self.volume_id, where,
                                       self.target_dev or "no target")


def find(domain_xml, volume_id, instance_uuid):
    """The VolumeTarget of the disk whose serial is ``volume_id``."""
    root = virt.parse_xml(domain_xml)
    for disk in root.findall("./devices/disk"):
        if (disk.findtext("serial") or "").strip() != volume_id:
            continue
        return _target(disk, volume_id, instance_uuid)
    raise exception.VolumeNotAttached(volume_id=volume_id,
                                      instance_uuid=instance_uuid)


def _target(disk, volume_id, instance_uuid):
    source = disk.find("source")
    driver = disk.find("driver")
    target = disk.find("target")
    fmt = (driver.get("type") if driver is not None else None) or "raw"
    dev = target.get("dev") if target is not None else None
    kind = disk.get("type")

    def refuse(reason):
        return exception.VolumeNotWritable(
            volume_id=volume_id, instance_uuid=instance_uuid, reason=reason)

    if source is None:
        raise refuse("its <disk> has no <source>")
    if fmt not in ("raw", "qcow2"):
        raise refuse("its format is %s, not raw or qcow2" % fmt)
    if kind == "network":
        if source.get("protocol") != "rbd" or not source.get("name"):
            raise refuse("a %s network disk; cs2os writes RBD ones"
                         % source.get("protocol"))
        auth = disk.find("auth")
        secret = auth.find("secret") if auth is not None else None
        hosts = tuple((h.get("name"), h.get("port") or "6789")
                      for h in source.findall("host"))
        return VolumeTarget(
            volume_id, "rbd", source.get("name"), fmt, hosts,
            auth.get("username") if auth is not None else None,
            secret.get("uuid") if secret is not None else None, dev)
    if kind in ("block", "file"):
        path = source.get("dev" if kind == "block" else "file")
        if not path or not os.path.isabs(path):
            raise refuse("its %s source names no absolute path" % kind)
        return VolumeTarget(volume_id, kind, path, fmt, target_dev=dev)
    raise refuse("a %s disk; cs2os writes rbd, block and file ones" % kind)


def keyring_key(keyring_dir, user):
    """The base64 key of ``client.<user>`` in ``<dir>/ceph.client.<user>
    .keyring`` (Ceph's own name for it), or None when there is no such
    file."""
    path = os.path.join(keyring_dir, "ceph.client.%s.keyring" % user)
    if not os.path.exists(path):
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
        return parser["client.%s" % user]["key"].strip()
    except (configparser.Error, KeyError):
        raise exception.VolumeNotWritable(
            volume_id="-", instance_uuid="-",
            reason="%s holds no key for client.%s" % (path, user)) from None


def qemu_target(target):
    """(json: filename qemu-img opens the volume by, whether it needs the
    key as ``--object secret,id=SECRET_ID``)."""
    if target.kind != "rbd":
        return target.path, False
    pool, _, image = target.path.partition("/")
    spec = {"driver": "rbd", "pool": pool, "image": image}
    if target.hosts:
        spec["server"] = [{"host": host, "port": str(port)}
                          for host, port in target.hosts]
    needs_key = bool(target.user)
    if needs_key:
        spec.update(user=target.user, **{"key-secret": SECRET_ID,
                                         "auth-client-required": ["cephx"]})
    opened = {"driver": target.fmt, "file": spec}
    return "json:" + json.dumps(opened, sort_keys=True), needs_key
