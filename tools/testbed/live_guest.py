"""The live move's test guest and its two domains (recipes/live-into-nova).

The guest is a 512-byte boot sector that prints ``LIVEPROBE BOOT`` once,
then ``C=<8 hex digits>`` 100 times a second on the serial port, the
counter kept in guest RAM at 0x600: B's first counter following A's last,
with no second banner, proves RAM and CPU state moved without a reboot.
Its source (as --32; ld -m elf_i386 -Ttext 0x7c00 --oformat binary) is
the recipe's boot.S; the bytes are below so no assembler is needed.

A is defined like CloudStack's KVM agent does (transient, file console),
B like Nova's libvirt driver (persistent, shut off, sysinfo, metadata,
``cache='none'`` disk, a pty serial port logged by virtlogd to
console.log).  :class:`SerialWatch` timestamps each console line as it
appears, so the pause is measured from the guest's own output.
"""

import os
import re
import subprocess
import threading
import time
from xml.sax import saxutils

import libvirt

BOOT_SECTOR = bytes.fromhex(
    "fa31c08ed88ec08ed0bc007cb036e643b89c2ee64088e0e640be727ce8250066c7060006"
    "00000000fbf466ff060006be857ce80f0066a10006e81400be887ce80200ebe5ac84c074"
    "06baf803eeebf5c3b9080066c1c00488c380e30f80c33080fb39760380c3075088d8baf8"
    "03ee58e2e2c30d0a4c49564550524f424520424f4f540d0a00433d000d0a00"
).ljust(510, b"\0") + b"\x55\xaa"
BANNER = "LIVEPROBE BOOT"
_COUNTER = re.compile(r"C=([0-9A-F]{8})")
MiB = 1024 * 1024


def make_disk(path, size=16 * MiB):
    """A qcow2 image whose first sector is the counter guest."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path,
                    str(size)], check=True)
    raw = path + ".boot"
    with open(raw, "wb") as f:
        f.write(BOOT_SECTOR)
    try:
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        "write -s %s 0 512" % raw, path], check=True,
                       capture_output=True)
    finally:
        os.unlink(raw)
    os.chmod(path, 0o644)
    return path


def _q(value):
    return saxutils.quoteattr(value)


_A_XML = """<domain type='kvm'>
  <name>%(name)s</name>
  <uuid>%(uuid)s</uuid>
  <description>CloudStack stand-in VM (live move test)</description>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
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
      <target dev='vda' bus='virtio'/>
      <serial>%(serial)s</serial>
    </disk>
    %(extra)s
    <serial type='file'><source path=%(console)s/></serial>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""

_EXTRA_DISK = """<disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file=%s/>
      <target dev='vdb' bus='virtio'/>
    </disk>"""

_B_XML = """<domain type='kvm'>
  <name>%(name)s</name>
  <uuid>%(uuid)s</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>live-test</nova:name>
    </nova:instance>
  </metadata>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <sysinfo type='smbios'>
    <system>
      <entry name='manufacturer'>OpenStack Foundation</entry>
      <entry name='product'>OpenStack Nova</entry>
      <entry name='serial'>%(uuid)s</entry>
      <entry name='uuid'>%(uuid)s</entry>
      <entry name='family'>Virtual Machine</entry>
    </system>
  </sysinfo>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/>
    <smbios mode='sysinfo'/></os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file=%(disk)s/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'><log file=%(console)s append='off'/></serial>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


def domain_a_xml(name, uuid, disk, console, extra_disk=None):
    return _A_XML % {
        "name": saxutils.escape(name), "uuid": uuid, "disk": _q(disk),
        "serial": uuid[:20], "console": _q(console),
        "extra": _EXTRA_DISK % _q(extra_disk) if extra_disk else ""}


def domain_b_xml(name, uuid, disk, console):
    return _B_XML % {"name": saxutils.escape(name), "uuid": uuid,
                     "disk": _q(disk), "console": _q(console)}


def blockcopy_pivot(dom, dev, dest, timeout=60):
    """A's disk copied whole onto ``dest`` (an existing qcow2 of the same
    size: Nova's disk) and A pivoted onto it, as the recipe's step 1."""
    flags = (libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT
             | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB)
    dom.blockCopy(dev, "<disk type='file'><source file=%s/>"
                  "<driver type='qcow2'/></disk>" % _q(dest), None, flags)
    deadline = time.monotonic() + timeout
    while True:
        info = dom.blockJobInfo(dev, 0)
        if info and info["end"] and info["cur"] == info["end"] and \
                "ready='yes'" in dom.XMLDesc(0):
            break
        if time.monotonic() > deadline:
            raise AssertionError("block copy of %s not ready: %s"
                                 % (dev, info))
        time.sleep(0.05)
    dom.blockJobAbort(dev, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
    while dom.blockJobInfo(dev, 0):
        if time.monotonic() > deadline:
            raise AssertionError("pivot of %s did not end" % dev)
        time.sleep(0.05)


class SerialWatch(threading.Thread):
    """Reads console logs every millisecond; each line with its time."""

    def __init__(self, *paths):
        super().__init__(name="serial-watch", daemon=True)
        self.lines = {p: [] for p in paths}  # path -> [(monotonic, text)]
        self._offsets = dict.fromkeys(paths, 0)
        self._partial = dict.fromkeys(paths, "")
        self.raw = dict.fromkeys(paths, "")  # every character read
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            for path in self.lines:
                self._read(path)
            time.sleep(0.001)

    def _read(self, path):
        try:
            with open(path, "rb") as f:
                f.seek(self._offsets[path])
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        now = time.monotonic()
        self._offsets[path] += len(data)
        self.raw[path] += data.decode("ascii", "replace")
        text = self._partial[path] + data.decode("ascii", "replace")
        *complete, self._partial[path] = text.split("\n")
        for line in complete:
            self.lines[path].append((now, line.strip()))

    def stop(self):
        self._done.set()
        self.join(5)

    def counters(self, path):
        """[(time, counter)] of ``path``'s lines, in order."""
        out = []
        for when, line in self.lines[path]:
            m = _COUNTER.search(line)
            if m:
                out.append((when, int(m.group(1), 16)))
        return out

    def joined_counters(self, *paths):
        """The counters of the files' text joined: a line the guest began
        on A and finished on B (its CPU stopped mid-line) counts once."""
        text = "".join(self.raw[p] for p in paths)
        return [int(v, 16) for v in _COUNTER.findall(text)]

    def banners(self, path):
        return sum(BANNER in line for _when, line in self.lines[path])

    def wait_counter(self, path, at_least, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.counters(path)
            if found and found[-1][1] >= at_least:
                return found[-1][1]
            time.sleep(0.01)
        raise AssertionError("%s: no counter >= %d in %d s (last lines %r)"
                             % (path, at_least, timeout,
                                self.lines[path][-3:]))


def remove_domain(dom):
    """Destroy ``dom`` if it runs and undefine it if defined: a test's own
    domain, at cleanup.  A transient domain that ended meanwhile is gone
    already."""
    try:
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            dom.undefine()
    except libvirt.libvirtError:
        pass
