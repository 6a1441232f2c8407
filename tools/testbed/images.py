"""Real disk images laid out the way CloudStack and Nova lay them out.

CloudStack (KVM, NFS primary storage): template B and volume overlay A live
in /mnt/<pool uuid>/, A's header names B by that absolute path.  Nova
(libvirt, qcow2 backend): D = raw copy of the Glance image in
<instances_path>/_base/<sha1(image id)>, C = <instances_path>/<uuid>/disk, a
qcow2 overlay on D sized from the flavor.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import struct
import subprocess
import uuid

MiB = 1024 * 1024


def run(*argv):
    subprocess.run(argv, check=True, capture_output=True)


def qemu_io_write(path, fmt, pattern, offset, length):
    run(
        "qemu-io",
        "-f",
        fmt,
        "-c",
        "write -P 0x%02x %d %d" % (pattern, offset, length),
        path,
    )


@dataclasses.dataclass
class CloudStackVolume:
    pool_dir: str
    template: str  # B, as it sits on primary storage
    overlay: str  # A, its header names the CloudStack host's path of B
    reference: str  # A rebased onto our local B: the guest's view
    header_backing: str  # None for a standalone volume
    written: int  # bytes written into A
    template_message: str  # what a guest booted from B alone prints
    message: str  # what a guest booted from A's chain prints
    # The layers between B and A, top-down: layers[0] is what A's header
    # names; each header names the next by its CloudStack path.
    layers: list = dataclasses.field(default_factory=list)


def make_cloudstack_volume(
    root,
    template_size=64 * MiB,
    volume_size=None,
    writes=((0xA1, 1 * MiB, 1 * MiB), (0xA2, 30 * MiB, 4 * MiB)),
    pool_uuid=None,
    same_template_as=None,
    standalone=False,
    shutdown_write=False,
    compat=None,
    layers=0,
):
    """Template B with data, overlay A with data at known offsets.

    ``same_template_as``: another CloudStackVolume whose template (and
    pool) the new volume shares, as two VMs made from one template do.
    ``standalone``: A holds the whole disk and has no backing file, as
    CloudStack's FAT and SPARSE provisioning make it.
    ``compat``: A's qcow2 version, e.g. "0.10" (version 2, as older
    CloudStack KVM hosts wrote overlays); qemu-img's default otherwise.
    ``layers``: that many qcow2 layers between B and A, as an interrupted
    volume snapshot leaves them (data: _make_layers); ``reference`` is then
    the chain's guest view as a standalone qcow2.
    """
    if layers and standalone:
        raise ValueError("a standalone volume has no layers")
    if same_template_as is not None:
        template = same_template_as.template
        pool_dir = same_template_as.pool_dir
        pool_uuid = os.path.basename(pool_dir)
        template_uuid = os.path.basename(template)
        template_message = same_template_as.template_message
        template_size = int(json.loads(subprocess.run(
            ["qemu-img", "info", "--output=json", "-f", "qcow2", template],
            check=True, capture_output=True, text=True).stdout)[
                "virtual-size"])
    else:
        pool_uuid = pool_uuid or str(uuid.uuid4())
        template_uuid = str(uuid.uuid4())
        pool_dir = os.path.join(root, "mnt", pool_uuid)
        os.makedirs(pool_dir, exist_ok=True)
        template = os.path.join(pool_dir, template_uuid)
        template_message = "cs2os template %s" % template_uuid
        _make_template(template, template_size, template_message)
    volume_size = volume_size or template_size
    chain = _make_layers(pool_dir, template, layers)
    overlay = os.path.join(pool_dir, str(uuid.uuid4()))
    options = ["-o", "compat=%s" % compat] if compat else []
    run(
        "qemu-img", "create", "-q", "-f", "qcow2", *options, "-b",
        chain[0] if chain else template, "-F", "qcow2", overlay,
        str(volume_size),
    )
    message = "cs2os CloudStack volume %s" % os.path.basename(overlay)
    write_bytes(overlay, 512, message_sector(message, shutdown_write))
    written = 0
    for pattern, offset, length in writes:
        qemu_io_write(overlay, "qcow2", pattern, offset, length)
        written += length
    if standalone:
        whole = overlay + ".whole"
        run("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2",
            overlay, whole)
        os.rename(whole, overlay)
        reference = os.path.join(root,
                                 "reference-%s.qcow2" % uuid.uuid4().hex)
        shutil.copyfile(overlay, reference)
        return CloudStackVolume(pool_dir, template, overlay, reference, None,
                                written, template_message, message)
    if chain:
        reference = os.path.join(root, "reference-%s.qcow2" % uuid.uuid4())
        run("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2",
            overlay, reference)
        names = ["/mnt/%s/%s" % (pool_uuid, os.path.basename(lower))
                 for lower in [*chain, template]]
        for n, upper in enumerate([overlay, *chain]):
            run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", names[n],
                "-F", "qcow2", upper)
        return CloudStackVolume(pool_dir, template, overlay, reference,
                                names[0], written, template_message, message,
                                chain)
    # What a CloudStack KVM host's overlay header says; that path does not
    # exist on a compute node (nor here).
    header_backing = "/mnt/%s/%s" % (pool_uuid, template_uuid)
    run(
        "qemu-img", "rebase", "-u", "-f", "qcow2", "-b", header_backing,
        "-F", "qcow2", overlay,
    )
    reference = os.path.join(root, "reference-%s.qcow2" % uuid.uuid4().hex)
    shutil.copyfile(overlay, reference)
    run(
        "qemu-img", "rebase", "-u", "-f", "qcow2", "-b", template,
        "-F", "qcow2", reference,
    )
    return CloudStackVolume(
        pool_dir, template, overlay, reference, header_backing, written,
        template_message, message,
    )


def _make_layers(pool_dir, template, count):
    """``count`` layers on ``template``, made bottom up, returned top-down.

    Layer n (0 on top, at most 16; B of 64 MiB or more) writes 0xC0 + n:
    512 KiB of its own at 36 MiB + n MiB + 4 KiB (not cluster-aligned),
    128 KiB at 30 MiB + n * 128 KiB (A's default write hides it) and
    1 MiB at 56 MiB (the layer above hides it: the order shows).  The
    bottom one also zeroes 512 KiB of B's data at 10 MiB.
    """
    chain, below = [], template
    for n in reversed(range(count)):
        layer = os.path.join(pool_dir, str(uuid.uuid4()))
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", below, "-F",
            "qcow2", layer)
        for offset, length in (((36 + n) * MiB + 4096, 512 * 1024),
                               (30 * MiB + n * 128 * 1024, 128 * 1024),
                               (56 * MiB, MiB)):
            qemu_io_write(layer, "qcow2", 0xC0 + n, offset, length)
        if below == template:
            run("qemu-io", "-f", "qcow2", "-c",
                "write -z %d %d" % (10 * MiB, 512 * 1024), layer)
        chain.insert(0, layer)
        below = layer
    return chain


def _make_template(template, size, message):
    run("qemu-img", "create", "-q", "-f", "qcow2", template, str(size))
    qemu_io_write(template, "qcow2", 0x11, 0, 2 * MiB)
    write_bytes(template, 0, boot_sector(size) + message_sector(message))
    qemu_io_write(template, "qcow2", 0x22, 10 * MiB, 2 * MiB)
    qemu_io_write(template, "qcow2", 0x33, size - MiB, MiB)


@dataclasses.dataclass
class NovaInstance:
    uuid: str
    instance_dir: str
    disk: str
    base: str
    disk_size: int
    domain_name: str

    def domain_xml(self):
        return DOMAIN_XML % {
            "name": self.domain_name,
            "uuid": self.uuid,
            "disk": self.disk,
            "console": os.path.join(self.instance_dir, "console.log"),
        }


def make_nova_instance(instances_path, template, disk_size, name_prefix):
    """D from the template like Nova's image cache, C on D like a boot."""
    image_id = str(uuid.uuid4())
    base_dir = os.path.join(instances_path, "_base")
    os.makedirs(base_dir, exist_ok=True)
    # Nova's own name for a cached image: not a security use of sha1.
    name = hashlib.sha1(image_id.encode()).hexdigest()  # noqa: S324
    base = os.path.join(base_dir, name)
    if not os.path.exists(base):
        run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", template, base)
    instance_uuid = str(uuid.uuid4())
    instance_dir = os.path.join(instances_path, instance_uuid)
    os.makedirs(instance_dir)
    disk = os.path.join(instance_dir, "disk")
    run(
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw",
        disk, str(disk_size),
    )
    with open(os.path.join(instance_dir, "disk.info"), "w") as f:
        json.dump({disk: "qcow2"}, f)
    return NovaInstance(
        uuid=instance_uuid,
        instance_dir=instance_dir,
        disk=disk,
        base=base,
        disk_size=disk_size,
        domain_name="%s-%s" % (name_prefix, instance_uuid[:8]),
    )


# Close to what Nova's libvirt driver defines, minus devices these tests do
# not need (network, graphics).
DOMAIN_XML = """<domain type='kvm'>
  <name>%(name)s</name>
  <uuid>%(uuid)s</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%(disk)s'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='%(console)s'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_state(path):
    """Names, sizes and content hashes of a directory's files."""
    return {
        name: (os.path.getsize(os.path.join(path, name)),
               sha256(os.path.join(path, name)))
        for name in sorted(os.listdir(path))
        if name != "console.log"
    }


def qemu_io_write_unsafe(path, pattern, offset, length):
    """Write into an overlay whose backing file is not reachable here.

    The overlay names /mnt/<pool>/<template> as a CloudStack host does; a
    json: filename opens it without its backing file, as a running
    CloudStack VM's own writes would land.
    """
    spec = json.dumps({
        "driver": "qcow2",
        "file": {"driver": "file", "filename": path},
        "backing": None,
    })
    run("qemu-io", "-c", "write -P 0x%02x %d %d" % (pattern, offset, length),
        "json:" + spec)


def make_corrupt_overlay(volume, dest):
    """A copy of the volume's overlay whose first refcount block is zeroed.

    The header stays valid (the pre-flight inspection passes); only
    ``qemu-img check`` can tell, and reports corruptions (exit 2).
    """
    shutil.copyfile(volume.overlay, dest)
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", dest],
        check=True, capture_output=True, text=True).stdout)
    cluster = info["cluster-size"]
    with open(dest, "r+b") as f:
        f.seek(48)  # refcount_table_offset, big-endian u64
        table = int.from_bytes(f.read(8), "big")
        f.seek(table)
        block = int.from_bytes(f.read(8), "big")
        f.seek(block)
        f.write(b"\0" * cluster)


# A 512-byte x86 boot sector: read disk sector 1 (LBA 1) into 0x7e00 with
# BIOS int 13h and write it, up to a NUL byte, to COM1.  Whatever text the
# overlay holds at LBA 1 therefore shows up in the domain's console log: the
# guest itself proves which disk content it booted from.
#
# Then it behaves as a guest OS does on ACPI: on the PIIX4 (machine 'pc') it
# enables the power button, waits for it (hlt between polls of PM1 status),
# and powers off through PM1 control (SLP_TYP 0 | SLP_EN = S5), so libvirt's
# and Nova's graceful shutdowns work.  When LBA 1 is marked for it
# (SHUTDOWN_WRITE_MARK at byte 510), it first writes its own boot sector to
# LBA 3: the last write of an application flushing on shutdown, which a
# clean cutover must carry over.
BOOT_CODE = bytes([
    0xFA, 0xFC,              # cli; cld
    0x31, 0xC0,              # xor ax, ax
    0x8E, 0xD8,              # mov ds, ax
    0x8E, 0xC0,              # mov es, ax
    0x8E, 0xD0,              # mov ss, ax
    0xBC, 0x00, 0x7C,        # mov sp, 0x7c00
    0xFB,                    # sti
    0x89, 0xD5,              # mov bp, dx       ; keep dl = boot drive
    0xB8, 0x01, 0x02,        # mov ax, 0x0201   ; read 1 sector
    0xB9, 0x02, 0x00,        # mov cx, 0x0002   ; cylinder 0, sector 2
    0x30, 0xF6,              # xor dh, dh       ; head 0, dl = boot drive
    0xBB, 0x00, 0x7E,        # mov bx, 0x7e00
    0xCD, 0x13,              # int 0x13
    0xBE, 0x00, 0x7E,        # mov si, 0x7e00
    0xAC,                    # next: lodsb
    0x84, 0xC0,              # test al, al
    0x74, 0x12,              # jz printed
    0x88, 0xC4,              # mov ah, al
    0xBA, 0xFD, 0x03,        # mov dx, 0x3fd    ; line status
    0xEC,                    # wait: in al, dx
    0xA8, 0x20,              # test al, 0x20    ; transmitter empty
    0x74, 0xFB,              # jz wait
    0xBA, 0xF8, 0x03,        # mov dx, 0x3f8    ; COM1 data
    0x88, 0xE0,              # mov al, ah
    0xEE,                    # out dx, al
    0xEB, 0xE9,              # jmp next
    0x66, 0xB8, 0x00, 0x0B, 0x00, 0x80,  # printed: mov eax, 0x80000b00
    0xBA, 0xF8, 0x0C,        # mov dx, 0xcf8    ; PCI 00:01.3, register 0
    0x66, 0xEF,              # out dx, eax
    0xBA, 0xFC, 0x0C,        # mov dx, 0xcfc
    0x66, 0xED,              # in eax, dx
    0x66, 0x3D, 0x86, 0x80, 0x13, 0x71,  # cmp eax, 0x71138086 ; PIIX4 PM?
    0x75, 0x46,              # jne done
    0x66, 0xB8, 0x40, 0x0B, 0x00, 0x80,  # mov eax, 0x80000b40 ; PMBASE
    0xBA, 0xF8, 0x0C,        # mov dx, 0xcf8
    0x66, 0xEF,              # out dx, eax
    0xBA, 0xFC, 0x0C,        # mov dx, 0xcfc
    0x66, 0xED,              # in eax, dx
    0x83, 0xE0, 0xC0,        # and ax, 0xffc0
    0x89, 0xC7,              # mov di, ax       ; PM1 status at di
    0x8D, 0x55, 0x02,        # lea dx, [di+2]   ; PM1 enable
    0xB8, 0x00, 0x01,        # mov ax, 0x0100   ; power button
    0xEF,                    # out dx, ax
    0xF4,                    # watch: hlt
    0x89, 0xFA,              # mov dx, di
    0xED,                    # in ax, dx
    0xF6, 0xC4, 0x01,        # test ah, 1       ; power button pressed?
    0x74, 0xF7,              # jz watch
    0xB8, 0x00, 0x01,        # mov ax, 0x0100
    0xEF,                    # out dx, ax       ; acknowledge it
    0x80, 0x3E, 0xFE, 0x7F, 0x5A,  # cmp byte [0x7ffe], SHUTDOWN_WRITE_MARK
    0x75, 0x0F,              # jne off
    0xB8, 0x01, 0x03,        # mov ax, 0x0301   ; write 1 sector
    0xB9, 0x04, 0x00,        # mov cx, 0x0004   ; sector 4 = LBA 3
    0x89, 0xEA,              # mov dx, bp
    0x30, 0xF6,              # xor dh, dh
    0xBB, 0x00, 0x7C,        # mov bx, 0x7c00   ; this boot sector
    0xCD, 0x13,              # int 0x13
    0x8D, 0x55, 0x04,        # off: lea dx, [di+4] ; PM1 control
    0xB8, 0x00, 0x20,        # mov ax, 0x2000   ; SLP_EN, SLP_TYP 0: S5
    0xEF,                    # out dx, ax
    0xF4,                    # done: hlt
    0xEB, 0xFD,              # jmp done
])
SHUTDOWN_WRITE_MARK = 0x5A
# Where the guest writes its boot sector when it shuts down (marked disks).
SHUTDOWN_WRITE_OFFSET = 3 * 512


def boot_sector(disk_size=64 * MiB):
    """BOOT_CODE plus one Linux partition entry over the rest of the disk:
    Nova's image safety check (oslo.utils format_inspector) rejects an MBR
    that defines no partition."""
    sector = bytearray(512)
    sector[:len(BOOT_CODE)] = BOOT_CODE
    first_lba = 2048
    # boot flag, start CHS, type 0x83 (Linux), end CHS, first LBA, sectors
    sector[446:462] = struct.pack("<B3BB3BII", 0x80, 0, 0x21, 0, 0x83, 0, 0,
                                  0, first_lba, disk_size // 512 - first_lba)
    sector[510:] = b"\x55\xaa"
    return bytes(sector)


def read_bytes(path, offset, length, fmt="qcow2"):
    """What the guest sees at ``offset`` of an image (qemu-io, shared)."""
    out = subprocess.run(
        ["qemu-io", "-r", "-U", "-f", fmt, "-c",
         "read -v %d %d" % (offset, length), path],
        check=True, capture_output=True, text=True).stdout
    data = bytearray()
    for line in out.splitlines():
        address, sep, rest = line.partition(":  ")
        if sep and all(c in "0123456789abcdef" for c in address):
            data += bytes.fromhex(rest[:16 * 3])
    if len(data) != length:
        raise AssertionError("qemu-io read %d of %d bytes: %s"
                             % (len(data), length, out))
    return bytes(data)


def write_bytes(path, offset, data, spec=None):
    """Write raw bytes into an image through qemu-io (any size/offset)."""
    scratch = path + ".bytes"
    with open(scratch, "wb") as f:
        f.write(data)
    try:
        target = "json:" + json.dumps(spec) if spec else path
        argv = ["qemu-io"] + ([] if spec else ["-f", "qcow2"])
        run(*argv, "-c", "write -s %s %d %d" % (scratch, offset, len(data)),
            target)
    finally:
        os.unlink(scratch)


def message_sector(text, shutdown_write=False):
    """LBA 1: the text the guest prints; ``shutdown_write`` marks it so
    that the guest writes its boot sector to LBA 3 when it shuts down."""
    data = text.encode() + b"\r\n\0"
    sector = bytearray(data + b"\0" * (512 - len(data)))
    if shutdown_write:
        sector[510] = SHUTDOWN_WRITE_MARK
    return bytes(sector)
