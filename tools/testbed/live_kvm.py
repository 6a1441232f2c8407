"""The live mode's CloudStack side: the stand-in's KVM host on a second
libvirtd, and VMs that run the counter guest (tools/testbed/live_guest).

Live mode's first hop is a real cross-host live migration from the
CloudStack KVM host's libvirtd to the Nova compute host's; on this machine
the minicloud's Nova uses the main libvirtd, so the KVM host is a
:class:`libvirtd_ns.SecondLibvirtd` (:func:`start_kvm_host`) and the
stand-in's :class:`cloudstack_kvm.LibvirtKVM` runs its domains there
(:func:`kvm_on`).  What that needs, and why it works:

- the URI: the second libvirtd's unix socket as seen from outside its
  namespace (``SecondLibvirtd.uri``); nothing listens on TCP.  The
  conductor's ``[cloudstack] kvm_libvirt_uri`` must contain ``{host}``
  (the agent's ``[live] kvm_libvirt_uri`` may), so :func:`uri_template`
  names the socket by the address CloudStack reports for the host,
  127.0.0.1: <base>/127.0.0.1 is a symlink to the socket's directory;
- the files: the stand-in's volumes and console logs live under the test
  run's work directory in /var/tmp, which the namespace does not cover, so
  both libvirtds (and their QEMUs) see them at the same paths; the
  directories are 0755 (libvirt's QEMU user walks through them) and the
  second libvirtd chowns the disk files to its QEMU user itself (DAC,
  dynamic ownership, the same uid as the main one's);
- /mnt: the stand-in's primary storage (<root>/mnt) is bind-mounted at
  /mnt inside the namespace, so an overlay's header naming
  /mnt/<pool>/<template> opens there as on a real CloudStack KVM host.
  LibvirtKVM does not need it (it hands libvirt the chain explicitly), but
  a migration back onto A's own overlay does: the hop's destination XML
  carries no <backingStore>, so libvirt reads the chain from the header;
- the source as the agent sees it: A's disk path in its XML is
  <root>/mnt/<pool>/<volume> (LibvirtKVM's local path), not /mnt/...;
- the direction: the agent on the Nova host drives a client-managed
  migration (it holds a connection to both libvirtds), the RAM stream and
  the NBD disk copy on 127.0.0.1: :func:`client_hop` is that call, for the
  testbed's own checks.

:func:`make_live_volume` is a CloudStack volume (template + overlay,
images.make_cloudstack_volume) whose overlay boots the counter guest; the
template, what Glance gets and Nova boots first, keeps images.py's boot
sector, which powers off on ACPI, so Nova's stop of its server is clean.
"""

import os

import libvirt

from cs2os_agent.agent.live import hop_spec
from tools.testbed import cloudstack_kvm
from tools.testbed import images
from tools.testbed import libvirtd_ns
from tools.testbed import live_guest

LOCAL = "127.0.0.1"
# live_guest's counter guest, plus: after each counter line it writes the
# 512 bytes at 0x600 (the counter, then "CNT!") to LBA 1 with BIOS int 13h,
# so the disk shows how far the guest got wherever it ran (disk_counter).
# Source: the recipe's boot.S with, after ``call puts`` of crlf,
#   mov $0x0301,%ax; mov $0x0002,%cx; xor %dh,%dh; mov drive,%dl
#   mov $COUNTER,%bx; int $0x13
# (``drive``: %dl as the BIOS booted it, saved first; "CNT!" stored at
# COUNTER+4 before ``sti``); as --32, ld -m elf_i386 -Ttext 0x7c00.
DISK_COUNTER_SECTOR = bytes.fromhex(
    "fa31c08ed88ec08ed0bc007c8816907cb036e643b89c2ee64088e0e640be917ce83f00"
    "66c70600060000000066c7060406434e5421fbf466ff060006bea47ce8200066a10006"
    "e82500bea77ce81300b80103b9020030f68a16907cbb0006cd13ebd4ac84c07406baf8"
    "03eeebf5c3b9080066c1c00488c380e30f80c33080fb39760380c3075088d8baf803ee"
    "58e2e2c3800d0a4c49564550524f424520424f4f540d0a00433d000d0a"
).ljust(510, b"\0") + b"\x55\xaa"
DISK_COUNTER_MAGIC = b"CNT!"
# Client-managed (no PEER2PEER: the caller drives both ends), as the
# agent's hop on the Nova host does.
CLIENT_HOP_FLAGS = (libvirt.VIR_MIGRATE_LIVE
                    | libvirt.VIR_MIGRATE_NON_SHARED_DISK
                    | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)


def start_kvm_host(name, root):
    """The KVM host's libvirtd, answering, with ``conn`` (the tests' own
    connection to it); the stand-in's primary storage (``root``/mnt) is
    its /mnt."""
    mnt = os.path.join(root, "mnt")
    os.makedirs(mnt, mode=0o755, exist_ok=True)
    daemon = libvirtd_ns.SecondLibvirtd(name, mounts={mnt: "/mnt"}).start()
    try:
        # <base>/<address> -> run/: the socket by the host's address.
        os.symlink("run", daemon.path(LOCAL))
        daemon.conn = libvirt.open(daemon.uri)
    except (OSError, libvirt.libvirtError):
        daemon.stop()
        raise
    return daemon


def uri_template(daemon):
    """``kvm_libvirt_uri`` for the conductor and the agent: the socket's
    path names ``{host}``, which the address CloudStack reports for the
    KVM host (127.0.0.1) turns into the second libvirtd's socket.  (The
    conductor refuses a template without ``{host}``; the agent's
    substitution is exercised too.)"""
    return "qemu+unix:///system?socket=%s/{host}/libvirt-sock" % daemon.base


def stop_kvm_host(daemon):
    daemon.conn.close()
    daemon.stop()


def kvm_on(daemon, root, stop_grace=1.0):
    """The stand-in's KVM host running its domains on ``daemon``."""
    return cloudstack_kvm.LibvirtKVM(root, daemon.uri, stop_grace=stop_grace)


def _unbacked(path):
    # The overlay's header names /mnt/<pool>/<template>, which does not
    # exist here: write into it without opening a backing file.
    return {"driver": "qcow2", "file": {"driver": "file", "filename": path},
            "backing": None}


def make_live_volume(root, **kwargs):
    """images.make_cloudstack_volume, with the counter guest's boot
    sector written into the overlay (and into ``reference``, the guest's
    view), so a VM on it prints ``C=<counter>`` 100 times a second and
    writes it to LBA 1 (:data:`DISK_COUNTER_SECTOR`); ``reference`` is
    the volume as made, before the guest ran."""
    volume = images.make_cloudstack_volume(root, **kwargs)
    spec = _unbacked(volume.overlay) if volume.header_backing else None
    images.write_bytes(volume.overlay, 0, DISK_COUNTER_SECTOR, spec)
    images.write_bytes(volume.reference, 0, DISK_COUNTER_SECTOR)
    volume.message = live_guest.BANNER
    return volume


def disk_counter(path, fmt="qcow2"):
    """The counter the guest last wrote to ``path``'s LBA 1 (read shared,
    while it runs), None if it never wrote there."""
    data = images.read_bytes(path, 512, 16, fmt)[:8]
    if data[4:] != DISK_COUNTER_MAGIC:
        return None
    return int.from_bytes(data[:4], "little")


def client_hop(source, dest_conn, temp_name, dest_disks, files=None,
               address=LOCAL):
    """The first hop as the agent on the Nova host makes it: A
    (``source``) live to ``dest_conn``'s libvirtd as ``temp_name``, its
    disks copied onto ``dest_disks`` (dev -> existing file), the data
    connections on ``address``.  Returns the temporary domain."""
    xml = hop_spec.dest_xml(
        source.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE
                       | libvirt.VIR_DOMAIN_XML_MIGRATABLE),
        dest_disks, None, files)
    params = hop_spec.migrate_params(xml, temp_name, dest_disks, address)
    return source.migrate3(dest_conn, params, CLIENT_HOP_FLAGS)

