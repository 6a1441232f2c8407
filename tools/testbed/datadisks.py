"""CloudStack data disks on a pool laid out as images.py lays out volumes,
or on RBD primary storage (make_rbd_data_disk; attach_rbd hot-plugs one
into a running VM's domain).

A data disk is a qcow2 file in /mnt/<pool uuid>/: standalone (a blank
disk offering), or an overlay on a data-disk template in the same pool,
whose header names the template by its CloudStack path.  ``reference``
is the disk's guest view here: the file itself, or a copy of its header
pointed at the local template, for ``qemu-img compare`` with what the
migration wrote into the Cinder volume.
"""

import dataclasses
import os
import shutil
import subprocess
import uuid

from tools.testbed import cloudstack_kvm
from tools.testbed import images

MiB = images.MiB


@dataclasses.dataclass
class DataDisk:
    path: str  # the file on the pool (its name is the volume's path)
    template: str  # its template on the pool, or None
    reference: str  # the guest view, readable here
    size: int  # virtual size, bytes
    written: int  # bytes the writes put into the disk file itself


def make_data_disk(pool_dir, size, writes, template_writes=None,
                   template_size=None):
    """A data disk of ``size`` bytes with ``writes`` [(pattern, offset,
    length)]; with ``template_writes``, an overlay on a template of
    ``template_size`` (default ``size``) that holds them."""
    os.makedirs(pool_dir, exist_ok=True)
    name = str(uuid.uuid4())
    path = os.path.join(pool_dir, name)
    template = None
    if template_writes is not None:
        template = os.path.join(pool_dir, str(uuid.uuid4()))
        images.run("qemu-img", "create", "-q", "-f", "qcow2", template,
                   str(template_size or size))
        for pattern, offset, length in template_writes:
            images.qemu_io_write(template, "qcow2", pattern, offset, length)
        images.run("qemu-img", "create", "-q", "-f", "qcow2", "-b", template,
                   "-F", "qcow2", path, str(size))
    else:
        images.run("qemu-img", "create", "-q", "-f", "qcow2", path,
                   str(size))
    for pattern, offset, length in writes:
        images.qemu_io_write(path, "qcow2", pattern, offset, length)
    reference = path
    if template is not None:
        reference = path + ".reference"
        shutil.copyfile(path, reference)
        # What the KVM host sees: /mnt/<pool uuid>/<template>.
        on_host = "/mnt/%s/%s" % (os.path.basename(pool_dir),
                                  os.path.basename(template))
        images.run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", on_host,
                   "-F", "qcow2", path)
        images.run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", template,
                   "-F", "qcow2", reference)
    return DataDisk(path, template, reference, size,
                    sum(length for _p, _o, length in writes))


def attach(cloud, vm, disk, name=None):
    """List ``disk`` as a DATADISK of ``vm`` in the CloudStack stand-in,
    on the pool of its root volume."""
    pool = cloud.root_volume(vm).pool
    return cloud.add_data_disk(vm, pool, os.path.basename(disk.path),
                               disk.size, name=name)


@dataclasses.dataclass
class RbdDataDisk:
    """A CloudStack data disk on RBD primary storage, as CloudStack makes
    one: a clone of a protected snapshot of its template's image, written
    to.  ``reference``: a local raw file with the same guest view."""

    pool: str
    image: str
    template: str
    size: int
    reference: str
    rbd: list  # the rbd command as the test's cephx user

    def uri(self, info):
        ceph = info["ceph"]
        return "rbd:%s/%s:conf=%s:id=%s" % (self.pool, self.image,
                                            ceph["conf"], ceph["user"])

    def remove(self):
        """Remove the clone, then the template's snapshot and image."""
        snap = "%s/%s@%s" % (self.pool, self.template, RBD_SNAPSHOT)
        # (--no-progress is an option of rm only: unprotect refuses it.)
        for args in (["rm", "--no-progress", "%s/%s" % (self.pool,
                                                        self.image)],
                     ["snap", "unprotect", snap], ["snap", "rm", snap],
                     ["rm", "--no-progress", "%s/%s" % (self.pool,
                                                        self.template)]):
            subprocess.run(self.rbd + args, capture_output=True)


# CloudStack's name for the snapshot its RBD volumes are cloned from.
RBD_SNAPSHOT = "cloudstack-base-snap"


def make_rbd_data_disk(info, workdir, name, size, template_writes, writes,
                       template_bytes=(), clone_bytes=()):
    """The template image (``template_writes``: (pattern, offset, length),
    ``template_bytes``: (offset, bytes)), its protected snapshot, the clone
    ``name`` (``writes`` and ``clone_bytes`` on top) in the Ceph pool of
    ``info`` (minicloud.json).  A root volume is made the same way, with
    a boot sector and the guest's message sector as bytes."""
    ceph = info["ceph"]
    rbd = ["rbd", "-c", ceph["conf"], "--id", ceph["user"]]
    pool, template = ceph["pool"], name + "-template"
    reference = os.path.join(workdir, name + ".raw")
    images.run("qemu-img", "create", "-q", "-f", "raw", reference, str(size))
    for pattern, offset, length in template_writes:
        images.qemu_io_write(reference, "raw", pattern, offset, length)
    local = {"driver": "raw", "file": {"driver": "file",
                                       "filename": reference}}
    for offset, data in template_bytes:
        images.write_bytes(reference, offset, data, spec=local)
    images.run(*rbd, "--no-progress", "import", reference,
               "%s/%s" % (pool, template))
    snap = "%s/%s@%s" % (pool, template, RBD_SNAPSHOT)
    images.run(*rbd, "snap", "create", snap)
    images.run(*rbd, "snap", "protect", snap)
    images.run(*rbd, "clone", snap, "%s/%s" % (pool, name))
    disk = RbdDataDisk(pool, name, template, size, reference, rbd)
    for pattern, offset, length in writes:
        images.qemu_io_write(disk.uri(info), "raw", pattern, offset, length)
        images.qemu_io_write(reference, "raw", pattern, offset, length)
    clone = {"driver": "raw", "file": {
        "driver": "rbd", "pool": pool, "image": name, "conf": ceph["conf"],
        "user": ceph["user"]}}
    for offset, data in clone_bytes:
        images.write_bytes(reference, offset, data, spec=local)
        images.write_bytes(reference + ".clone", offset, data, spec=clone)
    return disk


def attach_rbd(cloud, vm, disk, info, dev, name=None):
    """List ``disk`` (make_rbd_data_disk) as a DATADISK of the running
    ``vm``, on a CloudStack RBD pool of its own (path: the Ceph pool,
    ipaddress: the monitor), and hot-plug it into the VM's domain as the
    KVM agent does: a network disk logging in as the minicloud's cephx
    user with the minicloud's libvirt secret (info["ceph"]; reused, never
    defined or removed here).  Returns the CloudStack volume."""
    ceph = info["ceph"]
    host, _, port = ceph["mon_host"].partition(":")
    pool = cloud.add_storage_pool(vm.zone, "ceph-" + disk.image, type="RBD",
                                  path=disk.pool, ipaddress=host)
    volume = cloud.add_data_disk(vm, pool, disk.image, disk.size, name=name)
    cloud.kvm.attach_rbd_disk(vm.instancename, cloudstack_kvm.rbd_disk_xml(
        disk.pool, disk.image, host, port or 6789, ceph["user"],
        ceph["libvirt_secret_uuid"], dev, volume.id))
    return volume
