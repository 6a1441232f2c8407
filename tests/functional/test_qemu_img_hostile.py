"""Hostile images against the real qemu-img: every run is limited, and a
template that would expand far beyond its allocation is refused.

The limits are checked twice: in the argv that really reaches the process
(util-linux prlimit in front of qemu-img) and by a real qemu-img stopped
by each of them.  The compressed-cluster bomb is a real qcow2: 512 MiB of
one byte value in about a MiB of zlib clusters.  Disk use stays
modest: the largest writes are a conversion the output limit stops at 96
MiB and the conversion of a 16 MiB template.
"""

import hashlib
import os
import shutil
import subprocess

import pytest
from oslo_concurrency import processutils

from cs2os_agent import guestview
from cs2os_agent import qemu_img
from cs2os_agent.common import exception

MiB = 1024**2
GiB = 1024**3
BOMB_DATA = 512 * MiB


@pytest.fixture(autouse=True)
def _require_tools():
    for tool in ("qemu-img", "qemu-io", "prlimit"):
        if shutil.which(tool) is None:
            pytest.fail("%s is not installed (qemu-utils, util-linux)" % tool)


def run(*argv):
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A qcow2 of 1 GiB virtual whose first 512 MiB are compressed 0x41."""
    path = str(tmp_path_factory.mktemp("bomb") / "template.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", path, str(GiB))
    writes = []
    for offset in range(0, BOMB_DATA, 64 * MiB):
        writes += ["-c", "write -c -P 0x41 %d %d" % (offset, 64 * MiB)]
    run("qemu-io", "-f", "qcow2", *writes, path)
    return path


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """A real compressed template: 16 MiB of 4-bit noise (zlib ~1.8x) at
    1 MiB, in 32 MiB virtual."""
    d = tmp_path_factory.mktemp("compressed")
    raw = d / "src.raw"
    noise = bytes(b & 0x0F for b in os.urandom(16 * MiB))
    with open(raw, "wb") as f:
        f.truncate(32 * MiB)
        f.seek(MiB)
        f.write(noise)
    path = str(d / "template.qcow2")
    run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw),
        path)
    raw.unlink()
    view = bytes(MiB) + noise + bytes(15 * MiB)
    return path, hashlib.sha256(view).hexdigest()


@pytest.fixture
def argvs(monkeypatch):
    """Every argv that reaches processutils.execute, then runs it."""
    seen = []
    real = processutils.execute

    def spy(*argv, **kwargs):
        seen.append(list(argv))
        return real(*argv, **kwargs)

    monkeypatch.setattr(qemu_img.processutils, "execute", spy)
    return seen


def limits_of(argv):
    """The prlimit options in front of qemu-img, as a dict."""
    assert argv[0].endswith("prlimit"), argv
    sep = argv.index("--")
    assert argv[sep + 1] == "qemu-img"
    return dict(a[2:].split("=") for a in argv[1:sep])


# -- every command runs limited, as the argv shows ----------------------------


def test_every_command_reaches_qemu_img_under_prlimit(tmp_path, argvs,
                                                      compressed):
    template, _ = compressed
    base = str(tmp_path / "base.raw")
    top = str(tmp_path / "top.qcow2")
    qemu_img.create(base, "raw", size=32 * MiB)
    qemu_img.create(top, "qcow2", backing_file=template, backing_fmt="qcow2")
    qemu_img.rebase(top, "qcow2", base, "raw")
    qemu_img.resize(top, "qcow2", 64 * MiB)
    qemu_img.info(top, "qcow2")
    qemu_img.check(top, "qcow2")
    qemu_img.map(top, "qcow2")
    assert not qemu_img.images_equal(template, base, "qcow2", "raw")
    qemu_img.convert(template, "qcow2", str(tmp_path / "out.raw"), "raw",
                     max_output=32 * MiB)
    by_command = {}
    for argv in argvs:
        by_command.setdefault(argv[argv.index("--") + 2], []).append(
            limits_of(argv))
    assert sorted(by_command) == sorted([
        "create", "rebase", "resize", "info", "check", "map", "compare",
        "convert"])
    metadata = {"as": str(GiB), "cpu": "30", "core": "0"}
    for command in ("create", "rebase", "resize", "info", "check", "map"):
        assert all(lim == metadata for lim in by_command[command]), command
    # Data commands: 2 GiB, CPU after what they read (30 s + 1 s/16 MiB).
    assert by_command["compare"] == [{"as": str(2 * GiB), "cpu": "34",
                                      "core": "0"}]
    assert by_command["convert"] == [{"as": str(2 * GiB), "cpu": "32",
                                      "core": "0", "fsize": str(32 * MiB)}]


# -- and each limit really stops qemu-img -------------------------------------


@pytest.mark.parametrize("dest_fmt", ["raw", "qcow2"])
def test_output_limit_stops_a_real_convert(tmp_path, bomb, argvs, dest_fmt):
    out = tmp_path / "out"
    with pytest.raises(exception.QemuImgOutputTooLarge) as err:
        qemu_img.convert(bomb, "qcow2", str(out), dest_fmt,
                         max_output=96 * MiB)
    assert err.value.kwargs["command"] == "convert"
    assert err.value.kwargs["limit"] == 96 * MiB
    assert str(96 * MiB) in str(err.value)
    assert limits_of(argvs[-1])["fsize"] == str(96 * MiB)
    st = out.stat()
    if dest_fmt == "raw":
        # A raw file takes its 1 GiB length first: refused at once.
        assert st.st_size == 0 and st.st_blocks == 0
    else:
        # A qcow2 grows as it is written: stopped at the limit, with the
        # bomb's 512 MiB of data far from written out.
        assert 64 * MiB < st.st_size <= 96 * MiB
        assert st.st_blocks * 512 <= 96 * MiB


def test_cpu_limit_stops_a_real_compare(bomb, monkeypatch, argvs):
    # Comparing the bomb with itself inflates 2 x 512 MiB: ~2.4 s of CPU
    # here.
    # Its cap made 1 s (0 + one second for any bytes read).
    monkeypatch.setattr(qemu_img, "DATA_CPU_SECONDS", 0)
    monkeypatch.setattr(qemu_img, "DATA_BYTES_PER_CPU_SECOND", 1 << 62)
    with pytest.raises(exception.QemuImgTimeout) as err:
        qemu_img.compare(bomb, bomb, "qcow2", "qcow2")
    # prlimit sets soft = hard: the kernel's SIGKILL at the hard limit
    # comes with (and before) the SIGXCPU of the soft one.
    assert err.value.kwargs["command"] == "compare"
    assert err.value.kwargs["reason"] in ("killed by SIGKILL",
                                          "killed by SIGXCPU")
    assert limits_of(argvs[-1])["cpu"] == "1"


def test_address_space_limit_stops_a_real_convert(tmp_path, compressed,
                                                  monkeypatch, argvs):
    template, _ = compressed
    monkeypatch.setattr(qemu_img, "DATA_ADDRESS_SPACE", 64 * MiB)
    with pytest.raises(exception.QemuImgError) as err:
        qemu_img.convert(template, "qcow2", str(tmp_path / "o.raw"), "raw")
    assert err.value.kwargs["command"] == "convert"
    assert limits_of(argvs[-1])["as"] == str(64 * MiB)


def test_metadata_limit_stops_rebase_and_resize(tmp_path, monkeypatch):
    top = str(tmp_path / "top.qcow2")
    qemu_img.create(top, "qcow2", size=MiB)
    monkeypatch.setattr(qemu_img, "QEMU_IMG_LIMITS",
                        processutils.ProcessLimits(address_space=16 * MiB))
    for call in (lambda: qemu_img.rebase(top, "qcow2", None, None),
                 lambda: qemu_img.resize(top, "qcow2", 2 * MiB)):
        with pytest.raises(exception.QemuImgError):
            call()
    monkeypatch.undo()
    assert qemu_img.info(top, "qcow2")["virtual-size"] == MiB  # untouched


# -- the guest digest of a template: bombs refused, the rest bounded ----------


def test_bomb_refused_before_anything_is_written(tmp_path, bomb,
                                                 monkeypatch):
    ran = []
    monkeypatch.setattr(qemu_img, "convert",
                        lambda *a, **k: ran.append(a))
    allocated = os.stat(bomb).st_blocks * 512
    with pytest.raises(exception.ImageExpansionRefused) as err:
        guestview.guest_digest(bomb, "qcow2", str(tmp_path))
    assert err.value.kwargs["path"] == bomb
    assert err.value.kwargs["allocated"] == allocated
    assert err.value.kwargs["expanded"] == BOMB_DATA
    msg = str(err.value)
    assert bomb in msg and str(allocated) in msg and str(BOMB_DATA) in msg
    assert "64x allowed" in msg
    assert allocated * 64 < BOMB_DATA  # really a bomb: > 64x
    assert ran == [] and os.listdir(tmp_path) == []


def _measured_convert(monkeypatch):
    """Run the real conversion; record what its output really holds."""
    outputs = []
    real = qemu_img.convert

    def convert(path, fmt, dest, dest_fmt, **kwargs):
        real(path, fmt, dest, dest_fmt, **kwargs)
        st = os.stat(dest)
        outputs.append({"length": st.st_size,
                        "allocated": st.st_blocks * 512, **kwargs})

    monkeypatch.setattr(qemu_img, "convert", convert)
    return outputs


def test_compressed_template_converted_within_its_bounds(tmp_path,
                                                         compressed,
                                                         monkeypatch):
    template, want = compressed
    outputs = _measured_convert(monkeypatch)
    got = guestview.guest_digest(template, "qcow2", str(tmp_path))
    assert got == {"algorithm": "guest_sha256", "digest": want,
                   "virtual_size": 32 * MiB, "method": "convert"}
    # What qemu-img convert really wrote: the raw file is exactly the
    # virtual size long (its RLIMIT_FSIZE) and allocates no more than the
    # map's data extents (what the bomb check counts), zeros skipped.
    [out] = outputs
    assert out["max_output"] == out["length"] == 32 * MiB
    expanded = sum(e["length"] for e in qemu_img.map(template, "qcow2")
                   if e["data"] and not e["zero"])
    assert 16 * MiB <= expanded <= 17 * MiB
    # (plus the one block qemu-img allocates first to probe alignment).
    block = os.statvfs(tmp_path).f_bsize
    assert 15 * MiB < out["allocated"] <= expanded + block
    assert os.listdir(tmp_path) == []  # the scratch file is gone


def test_expansion_bound_is_a_parameter(tmp_path, compressed):
    template, _ = compressed
    allocated = os.stat(template).st_blocks * 512
    with pytest.raises(exception.ImageExpansionRefused) as err:
        guestview.guest_digest(template, "qcow2", str(tmp_path),
                               max_expansion=1)
    assert err.value.kwargs["allocated"] == allocated
    assert "1x allowed" in str(err.value)
    assert os.listdir(tmp_path) == []


def test_conversion_must_fit_the_scratch_file_system(tmp_path, compressed,
                                                     monkeypatch):
    template, _ = compressed
    real = guestview._free_bytes
    seen = []

    def free(directory):
        seen.append(real(directory))  # the real statvfs answer works
        return 8 * MiB  # as if the file system were nearly full

    monkeypatch.setattr(guestview, "_free_bytes", free)
    with pytest.raises(exception.ImageExpansionRefused) as err:
        guestview.guest_digest(template, "qcow2", str(tmp_path))
    assert str(tmp_path) in str(err.value)
    assert "8388608 bytes to spare" in str(err.value)
    assert seen and seen[0] > 0
    assert os.listdir(tmp_path) == []


def test_uncompressed_template_is_hashed_in_place(tmp_path):
    # No conversion at all (nothing written) when map can place the data.
    path = str(tmp_path / "t.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", path, str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x41 1M 2M", path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    got = guestview.guest_digest(path, "qcow2", str(scratch))
    view = bytes(MiB) + b"\x41" * 2 * MiB + bytes(5 * MiB)
    assert got["method"] == "map"
    assert got["digest"] == hashlib.sha256(view).hexdigest()
    assert os.listdir(scratch) == []
