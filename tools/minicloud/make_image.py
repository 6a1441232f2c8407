"""Write a tiny bootable raw disk for the minicloud's smoke test and e2e tests.

    make_image.py OUT.raw "line the guest prints"

Sector 0 is the functional tests' boot sector (tools/testbed/images.py:
it reads sector 1 with the BIOS and writes it to COM1, then halts), plus one
Linux partition entry: Nova's image safety check (oslo.utils'
format_inspector) rejects an MBR that defines no partition.  Sector 1 holds
the line, so the guest's console log proves which disk it booted from.
Standard library only: runs with any Python.
"""

import importlib.util
import os
import struct
import sys

MiB = 1024 * 1024
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _functional_images():
    # By path: the minicloud's venv has no cs2os_agent, which other test
    # bed modules import; images.py itself needs only the stdlib.
    path = os.path.join(REPO, "tools", "testbed", "images.py")
    spec = importlib.util.spec_from_file_location("_cs2os_ft_images", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def boot_disk(message, size=8 * MiB):
    """The whole raw disk as bytes."""
    images = _functional_images()
    mbr = bytearray(images.boot_sector())
    first_lba = 2048
    # The partition entry is written here whether or not boot_sector() has
    # one, sized to this disk: boot flag, start CHS, type 0x83 (Linux), end
    # CHS, first LBA, sectors.
    mbr[446:462] = struct.pack("<B3BB3BII", 0x80, 0, 0x21, 0, 0x83, 0, 0, 0,
                               first_lba, size // 512 - first_lba)
    disk = bytearray(size)
    disk[0:512] = mbr
    disk[512:1024] = images.message_sector(message)
    return bytes(disk)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make_image.py OUT.raw MESSAGE")
    with open(sys.argv[1], "wb") as f:
        f.write(boot_disk(sys.argv[2]))


if __name__ == "__main__":
    main()
