"""Internal qcow2 snapshots in a CloudStack volume, as CloudStack makes them.

A CloudStack VM snapshot on KVM is an internal snapshot of the volume file:
disk-only when the VM is stopped (``qemu-img snapshot -c``), with the
guest's memory when it runs (libvirt's internal snapshot, QEMU's
``savevm``).  :func:`add` takes them on a volume made by
images.make_cloudstack_volume and writes over the data after each, so the
file holds clusters only the snapshots need.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

from qemu.qmp import legacy as qmp

from tools.testbed import images


def add(vol, steps, with_memory=()):
    """Take a snapshot, then write, per step; refresh ``vol.reference``.

    ``steps``: ``[(name, writes)]``, ``writes`` as images.qemu_io_write
    takes them (pattern, offset, length), plus an optional fourth item,
    True for a compressed write.  ``with_memory``: the names taken from a
    running QEMU (``savevm``), so they hold the guest's memory as well.
    The overlay is put on the local template meanwhile (a snapshot opens
    the backing file) and back on its CloudStack path after.
    """
    if vol.layers or vol.header_backing is None:
        raise ValueError("only a plain overlay on its template")
    images.run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b",
               vol.template, "-F", "qcow2", vol.overlay)
    try:
        for name, writes in steps:
            if name in with_memory:
                save_with_memory(vol.overlay, name)
            else:
                images.run("qemu-img", "snapshot", "-c", name, vol.overlay)
            for write in writes:
                pattern, offset, length = write[:3]
                compressed = "-c " if len(write) > 3 and write[3] else ""
                images.run("qemu-io", "-f", "qcow2", "-c",
                           "write %s-P 0x%02x %d %d"
                           % (compressed, pattern, offset, length),
                           vol.overlay)
        shutil.copyfile(vol.overlay, vol.reference)
    finally:
        images.run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b",
                   vol.header_backing, "-F", "qcow2", vol.overlay)


def save_with_memory(path, name, memory_mib=64):
    """``savevm name`` in a KVM guest booted from ``path``, then quit."""
    workdir = tempfile.mkdtemp(prefix="cs2os-savevm-")
    sock = os.path.join(workdir, "qmp.sock")
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "kvm", "-m", str(memory_mib),
         "-nodefaults", "-display", "none", "-name",
         "cs2os-savevm-%s" % uuid.uuid4().hex[:8],
         "-drive", "file=%s,format=qcow2,if=virtio" % path,
         "-qmp", "unix:%s,server=on,wait=off" % sock],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("qemu did not start: %s"
                                   % proc.stderr.read().decode())
            time.sleep(0.05)
        monitor = qmp.QEMUMonitorProtocol(sock)
        monitor.connect()
        try:
            out = monitor.cmd_raw("human-monitor-command",
                                  {"command-line": "savevm %s" % name})
            if out.get("return"):  # HMP answers errors as text
                raise RuntimeError("savevm: %s" % out["return"])
            try:
                monitor.cmd_raw("quit")
            except EOFError:
                pass  # QEMU may close the socket before it answers
        finally:
            try:
                monitor.close()
            except EOFError:
                pass  # the same, seen when closing after the quit
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)


def snapshot_names(path):
    """The internal snapshots' names, from ``qemu-img info``."""
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", path],
        check=True, capture_output=True, text=True).stdout)
    return [s["name"] for s in info.get("snapshots") or []]


def snapshot_view(path, name, dest):
    """Snapshot ``name`` of ``path`` as a standalone qcow2 at ``dest``."""
    images.run("qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2",
               "-l", "snapshot.name=%s" % name, path, dest)
    return dest
