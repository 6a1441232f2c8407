"""The guest digest's bounds on a hostile template, without qemu-img.

The real bomb (a real compressed qcow2 and the real qemu-img) is in
tests/functional/test_qemu_img_hostile.py; here the arithmetic: what
counts as written, what is refused, and the raw reader's own limit.
"""

import hashlib
import os

import pytest

from cs2os_agent import guestview
from cs2os_agent.common import exception

MiB = 1024**2
GiB = 1024**3


@pytest.fixture
def template(tmp_path):
    """A 64 KiB file: 64 KiB allocated."""
    path = tmp_path / "template.qcow2"
    path.write_bytes(os.urandom(64 * 1024))
    return str(path)


def extents(data, zero=0, hole=0):
    """A map: compressed data (no offset), zero clusters, a hole."""
    return [
        {"start": 0, "length": data, "depth": 0, "data": True,
         "zero": False},
        {"start": data, "length": zero, "depth": 0, "data": True,
         "zero": True},
        {"start": data + zero, "length": hole, "depth": 0, "data": False,
         "zero": True},
    ]


def allocated(path):
    return os.stat(path).st_blocks * 512


def test_data_beyond_the_expansion_bound_refused(template, tmp_path):
    limit = allocated(template) * guestview.MAX_EXPANSION
    with pytest.raises(exception.ImageExpansionRefused) as err:
        guestview._refuse_bombs(template, extents(limit + 1), str(tmp_path),
                                guestview.MAX_EXPANSION)
    assert err.value.kwargs == {
        "path": template, "allocated": allocated(template),
        "expanded": limit + 1,
        "reason": "64.0x its allocation, more than the 64x allowed (a "
                  "compressed-cluster bomb?)"}
    assert err.value.code == 413


def test_zero_clusters_and_holes_cost_nothing(template, tmp_path):
    # A sparse raw output skips them: a huge virtual size alone is fine.
    limit = allocated(template) * guestview.MAX_EXPANSION
    assert guestview._refuse_bombs(
        template, extents(limit, zero=100 * GiB, hole=900 * GiB),
        str(tmp_path), guestview.MAX_EXPANSION) == limit


def test_conversion_must_leave_the_file_system_room(template, tmp_path,
                                                    monkeypatch):
    class Fs:  # 1 GiB file system, 100 MiB available
        f_frsize = 4096
        f_blocks = GiB // 4096
        f_bavail = 100 * MiB // 4096

    monkeypatch.setattr(guestview.os, "statvfs", lambda d: Fs)
    room = 100 * MiB - int(GiB * guestview.KEEP_FREE)
    assert guestview._free_bytes(str(tmp_path)) == room
    guestview._refuse_bombs(template, extents(room), str(tmp_path), 1 << 20)
    with pytest.raises(exception.ImageExpansionRefused) as err:
        guestview._refuse_bombs(template, extents(room + 1), str(tmp_path),
                                1 << 20)
    assert err.value.kwargs["reason"] == (
        "%s has %d bytes to spare (keeping 5%% of its file system free)"
        % (tmp_path, room))


def test_raw_view_longer_than_the_virtual_size_refused(tmp_path):
    # As baseproof.guest_digest refuses a base longer than the template.
    raw = tmp_path / "view.raw"
    raw.write_bytes(b"\x01" * 1024)
    with pytest.raises(exception.Invalid) as err:
        guestview.digest_raw(str(raw), 512)
    assert str(raw) in str(err.value) and "1024" in str(err.value)
    padded = hashlib.sha256(b"\x01" * 1024 + bytes(1024)).hexdigest()
    assert guestview.digest_raw(str(raw), 2048) == padded
