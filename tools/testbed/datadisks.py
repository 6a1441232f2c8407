"""CloudStack data disks on a pool laid out as images.py lays out volumes.

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
import uuid

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
