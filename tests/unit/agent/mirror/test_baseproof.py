"""Proving D == B: digests computed here, compare replaced by a fake."""

import hashlib
import os
import stat
import threading

import pytest

from cs2os_agent import qemu_img
from cs2os_agent.agent.mirror import baseproof
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors

MiB = 1024 * 1024


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "d.raw"
    with open(path, "wb") as f:
        f.write(b"\x11" * 4096)
        f.truncate(3 * MiB)  # a hole: the guest reads zeros
    return str(path)


def guest_sha256(size):
    return hashlib.sha256(b"\x11" * 4096 + bytes(size - 4096)).hexdigest()


def test_digest_of_the_guest_view(base):
    assert baseproof.guest_digest(base, "raw") == guest_sha256(3 * MiB)
    # A template bigger than D: the guest reads zeros past D's end.
    assert baseproof.guest_digest(base, "raw", size=5 * MiB) == (
        guest_sha256(5 * MiB))


def test_digest_proof_accepted(base):
    assert baseproof.prove(base, "raw", {
        "algorithm": "guest_sha256", "digest": guest_sha256(3 * MiB).upper(),
        "virtual_size": 3 * MiB}) == {"method": "digest",
                                      "algorithm": "guest_sha256"}


def test_digest_mismatch_refused(base):
    with pytest.raises(mirror_errors.BaseMismatch) as err:
        baseproof.prove(base, "raw", {
            "algorithm": "guest_sha256", "digest": "0" * 64,
            "virtual_size": 3 * MiB})
    assert "guest_sha256" in str(err.value)


def test_base_larger_than_the_template_refused(base):
    with pytest.raises(mirror_errors.BaseMismatch):
        baseproof.prove(base, "raw", {
            "algorithm": "guest_sha256", "digest": guest_sha256(MiB),
            "virtual_size": MiB})


@pytest.mark.parametrize("proof", [
    None, {}, {"sha512": "ab"},
    # A digest of B's qcow2 file (what Glance records) proves nothing.
    {"algorithm": "sha512", "digest": "ab", "virtual_size": 1},
    {"algorithm": "guest_sha256", "digest": "xyz", "virtual_size": 1},
    {"algorithm": "guest_sha256", "digest": "ab", "virtual_size": True},
    {"algorithm": "guest_sha256", "digest": "ab"},
    {"template": "/mnt/p/b"},
])
def test_no_usable_proof_refused(base, proof):
    with pytest.raises(mirror_errors.BaseNotVerified):
        baseproof.prove(base, "raw", proof)


def test_digest_needs_a_raw_base(base):
    with pytest.raises(mirror_errors.BaseNotVerified) as err:
        baseproof.guest_digest(base, "qcow2")
    assert "compare" in str(err.value)


def test_compare_proof(base, monkeypatch, tmp_path):
    calls = []

    def compare(left, right, left_fmt, right_fmt, **kw):
        calls.append((left, right, left_fmt, right_fmt, kw))

    monkeypatch.setattr(qemu_img, "compare", compare)
    template = str(tmp_path / "b")
    with open(template, "wb") as f:
        f.write(b"QFI\xfb")
    assert baseproof.prove(base, "raw", {
        "template": template, "template_format": "qcow2"})["method"] == (
            "compare")
    assert calls == [(template, base, "qcow2", "raw",
                      {"force_share": True})]

    def differ(*args, **kw):
        raise exception.ImagesDiffer(left="b", right="d",
                                     detail="Content mismatch at offset 1!")

    monkeypatch.setattr(qemu_img, "compare", differ)
    with pytest.raises(mirror_errors.BaseMismatch) as err:
        baseproof.prove(base, "raw", {"template": template,
                                      "template_format": "qcow2"})
    assert "Content mismatch at offset 1!" in str(err.value)


def _within(fn, *args):
    """Run ``fn``; fail (not hang) if it blocks for 5 s."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "blocked on a FIFO"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def fifo(tmp_path):
    p = str(tmp_path / "b.fifo")
    os.mkfifo(p)
    yield p
    try:  # release a reader a regression left blocked
        os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_fifo_template_refused_before_qemu_img(base, fifo, monkeypatch):
    # qemu-img compare would block opening it, CPU cap or not.
    monkeypatch.setattr(qemu_img, "compare", lambda *a, **k: pytest.fail(
        "qemu-img compare ran on a FIFO"))
    with pytest.raises(exception.SourceNotRegularFile) as err:
        _within(baseproof.prove, base, "raw",
                {"template": fifo, "template_format": "qcow2"})
    assert err.value.kwargs == {"path": fifo, "kind": "FIFO"}


def test_digest_of_a_fifo_or_device_base_refused(fifo, tmp_path):
    with pytest.raises(exception.SourceNotRegularFile, match="FIFO"):
        _within(baseproof.guest_digest, fifo, "raw")
    zero = str(tmp_path / "zero")
    os.mknod(zero, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
    with pytest.raises(exception.SourceNotRegularFile,
                       match="character device"):
        _within(baseproof.guest_digest, zero, "raw", "guest_sha256", MiB)
