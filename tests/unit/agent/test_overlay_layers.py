"""overlay.stage with layers between the template and the overlay.

Sources are fakes holding a qcow2 header; qemu-img is patched (what it is
asked, in which order).  The real thing: tests/functional/test_agent_layers.
"""

import os
import threading
import types

import pytest

from cs2os_agent import qemu_img
from cs2os_agent.agent import layers as layers_mod
from cs2os_agent.agent import layout
from cs2os_agent.agent import manager
from cs2os_agent.agent import overlay
from cs2os_agent.agent import rpcapi
from cs2os_agent.common import exception
from cs2os_agent.transfer import monitor as transfer_monitor
from tests.unit.qemu_img_helpers import run_fixture  # noqa: F401 - fixture
from tests.unit.test_qcow2 import INCOMPAT_DATA_FILE
from tests.unit.test_qcow2 import qcow2_header

MiB = 1024 * 1024
BASE = "/nova/_base/d"
POOL = "/mnt/pool/"


class FakeSource:
    """One file of the chain: a header naming ``backing``, then padding."""

    transport = "path"

    def __init__(self, name, backing=None, size=64 * MiB, incompatible=0):
        self.name = name
        self.data = qcow2_header(
            size=size, incompatible=incompatible,
            backing=(POOL + backing).encode() if backing else b"")
        self.copied_by = None

    def describe(self):
        return POOL + self.name

    def fingerprint(self):
        return {"transport": "path", "path": POOL + self.name,
                "size": len(self.data), "mtime_ns": 1, "inode": 7}

    def read_header(self, nbytes):
        return self.data[:nbytes]

    def size(self):
        return len(self.data)

    def bytes_to_copy(self, offset=0):
        return len(self.data) - offset

    def copy_to(self, partial, monitor, offset=0):
        os.pwrite(partial.fd, self.data[offset:], offset)
        partial.advanced(len(self.data))
        monitor.advance(len(self.data) - offset)
        return len(self.data) - offset


def chain(count):
    """A on layers l0..l(count-1) on the template, top-down."""
    names = ["a"] + ["l%d" % n for n in range(count)] + ["template"]
    sources = [FakeSource(names[n], names[n + 1]) for n in range(count + 1)]
    return sources[0], sources[1:]


@pytest.fixture
def files(tmp_path):
    return layout.InstanceFiles(str(tmp_path))


@pytest.fixture
def qemu(monkeypatch):
    """Every qemu-img call stage makes, in order; the staged file ends on
    D at the instance disk's size."""
    calls = []

    def rebase(path, fmt, backing, backing_fmt, unsafe=True, reads=None):
        calls.append(("rebase", os.path.basename(path),
                      os.path.basename(backing), backing_fmt, unsafe, reads))

    def info(path, fmt, **kwargs):
        calls.append(("info", os.path.basename(path)))
        return {"virtual-size": 128 * MiB, "backing-filename": BASE,
                "backing-filename-format": "raw"}

    monkeypatch.setattr(qemu_img, "rebase", rebase)
    monkeypatch.setattr(qemu_img, "info", info)
    for name in ("check", "resize"):
        monkeypatch.setattr(qemu_img, name, lambda path, *a, _n=name: (
            calls.append((_n, os.path.basename(path)))))
    return calls


REFERENCE = overlay.Reference(BASE, "raw", 128 * MiB)


def stage(files, source, layers, cancel=None):
    def monitor(total):
        stage.total = total
        return transfer_monitor.TransferMonitor(
            "m", "sync_overlay", total, cancel_event=cancel)

    return overlay.stage(source, files, REFERENCE, monitor, 4 * MiB,
                         layers=layers)


def test_layers_are_copied_linked_bottom_up_and_merged_safely(files, qemu):
    source, layers = chain(2)
    result = stage(files, source, layers)
    size = len(source.data)
    assert stage.total == 3 * size
    assert (result["bytes_copied"], result["layer_bytes_copied"],
            result["layers_merged"]) == (3 * size, 2 * size, 2)
    assert qemu[:7] == [
        ("rebase", "disk.cs2os-layer-1", "d", "raw", True, None),
        ("rebase", "disk.cs2os-layer-0", "disk.cs2os-layer-1", "qcow2", True,
         None),
        ("rebase", "disk.cs2os-staged.part", "disk.cs2os-layer-0", "qcow2",
         True, None),
        ("check", "disk.cs2os-layer-0"),
        ("check", "disk.cs2os-layer-1"),
        ("check", "disk.cs2os-staged.part"),
        ("rebase", "disk.cs2os-staged.part", "d", "raw", False,
         2 * 64 * MiB),
    ]
    # Then as without layers: grown, verified.
    assert ("resize", "disk.cs2os-staged.part") in qemu[7:]
    assert sorted(os.listdir(files.instance_dir)) == ["disk.cs2os-staged"]


def test_without_layers_only_the_unsafe_rebase(files, qemu):
    source = FakeSource("a", "template")
    result = stage(files, source, ())
    assert qemu[0] == ("rebase", "disk.cs2os-staged.part", "d", "raw", True,
                       None)
    assert not [c for c in qemu if c[0] == "rebase" and c[4] is False]
    assert (result["layers_merged"], result["layer_bytes_copied"]) == (0, 0)
    assert result["bytes_copied"] == len(source.data)


def refused(files, qemu, source, layers, error):
    with pytest.raises(error) as err:
        stage(files, source, layers)
    # Refused before a byte moved: nothing written, qemu-img never ran.
    assert os.listdir(files.instance_dir) == []
    assert qemu == []
    return str(err.value)


def test_a_layer_without_backing_file(files, qemu):
    source, layers = chain(2)
    layers[1] = FakeSource("l1")
    message = refused(files, qemu, source, layers, exception.InvalidSource)
    assert "layer 1 (/mnt/pool/l1)" in message
    assert "no backing file" in message


def test_a_layer_larger_than_the_instance_disk(files, qemu):
    source, layers = chain(2)
    layers[0] = FakeSource("l0", "l1", size=256 * MiB)
    message = refused(files, qemu, source, layers, exception.OverlayTooLarge)
    assert message.startswith("layer 0 (/mnt/pool/l0): virtual size %d"
                              % (256 * MiB))


def test_a_layer_with_an_external_data_file(files, qemu):
    source, layers = chain(1)
    layers[0] = FakeSource("l0", "template", incompatible=INCOMPAT_DATA_FILE)
    message = refused(files, qemu, source, layers, exception.UnsafeImage)
    assert "layer 0 (/mnt/pool/l0)" in message
    assert "data_file" in message


def test_more_than_sixteen_layers(files, qemu):
    source, layers = chain(17)
    message = refused(files, qemu, source, layers, exception.InvalidSource)
    assert "17 layers" in message and "at most 16" in message
    with pytest.raises(exception.InvalidSource):
        layers_mod.requests([{}] * 17)
    with pytest.raises(exception.InvalidSource):
        layers_mod.requests({"transport": "path"})
    assert layers_mod.requests(None) == []


def test_the_same_file_twice(files, qemu):
    source, layers = chain(2)
    layers[1] = layers[0]
    message = refused(files, qemu, source, layers, exception.InvalidSource)
    assert "same file as layer 0" in message
    source, layers = chain(1)
    layers[0] = FakeSource("a", "template")
    message = refused(files, qemu, source, layers, exception.InvalidSource)
    assert "same file as the overlay" in message


def test_layers_out_of_order(files, qemu):
    source, layers = chain(2)
    message = refused(files, qemu, source, layers[::-1],
                      exception.InvalidSource)
    assert "the overlay names /mnt/pool/l0 as its backing file" in message


def test_layers_under_a_standalone_overlay(files, qemu):
    _source, layers = chain(1)
    message = refused(files, qemu, FakeSource("a"), layers,
                      exception.InvalidSource)
    assert "the overlay has no backing file" in message


def test_cancel_during_a_layer_copy_removes_every_copy(files, qemu):
    source, layers = chain(2)
    cancel = threading.Event()
    copy_to = layers[1].copy_to

    def cancelled_copy(partial, monitor, offset=0):
        cancel.set()
        return copy_to(partial, monitor, offset)

    layers[1].copy_to = cancelled_copy
    with pytest.raises(exception.MigrationCancelled):
        stage(files, source, layers, cancel)
    assert os.listdir(files.instance_dir) == []


def test_a_failed_merge_removes_the_layer_copies(files, qemu, monkeypatch):
    source, layers = chain(2)
    # Left by an earlier, longer chain's crashed stage.
    with open(files.layer(5), "w") as f:
        f.write("stale")

    def rebase(path, fmt, backing, backing_fmt, unsafe=True, reads=None):
        if not unsafe:
            raise exception.QemuImgError(command="rebase", exit_code=1,
                                         stderr="boom")

    monkeypatch.setattr(qemu_img, "rebase", rebase)
    with pytest.raises(exception.QemuImgError):
        stage(files, source, layers)
    assert os.listdir(files.instance_dir) == []


def test_chain_fingerprint():
    source, layers = chain(2)
    assert layers_mod.chain_fingerprint(source) == source.fingerprint()
    combined = layers_mod.chain_fingerprint(source, layers)
    assert combined == dict(source.fingerprint(), layers=[
        layer.fingerprint() for layer in layers])


def test_cleanup_knows_the_layer_copies(files):
    ours = files.ours()
    assert files.layer(0) in ours and files.layer_meta(15) in ours
    assert os.path.basename(files.layer(3)) == "disk.cs2os-layer-3"


def test_rpc_sends_layers_only_with_1_2(monkeypatch):
    calls = []
    monkeypatch.setattr(rpcapi, "CONF", types.SimpleNamespace(
        rpc_response_timeout=60, long_rpc_timeout=1800))

    def prepare(server=None, version=None, **kwargs):
        return types.SimpleNamespace(call=lambda ctxt, method, **kw: (
            calls.append((version, kw))))

    api = rpcapi.AgentAPI.__new__(rpcapi.AgentAPI)
    api.client = types.SimpleNamespace(prepare=prepare)
    source = {"transport": "path", "path": "/mnt/p/a"}
    layer = {"transport": "path", "path": "/mnt/p/l"}
    api.sync_overlay(None, "h", "m", "u", source)
    api.sync_overlay(None, "h", "m", "u", source, layers=[])
    api.sync_overlay(None, "h", "m", "u", source, layers=[layer])
    api.sync_overlay(None, "h", "m", "u", source, keep_snapshots=False)
    api.sync_overlay(None, "h", "m", "u", source, layers=[layer],
                     keep_snapshots=True)
    plain = {"migration_id": "m", "instance_uuid": "u", "source": source}
    assert calls == [("1.0", plain), ("1.0", plain),
                     ("1.2", dict(plain, layers=[layer])), ("1.0", plain),
                     ("1.3", dict(plain, layers=[layer],
                                  keep_snapshots=True))]
    assert rpcapi.RPC_API_VERSION == "1.6"
    assert manager.AgentManager.target.version == "1.6"


def test_the_safe_rebase_runs_under_data_limits(run):
    qemu_img.rebase("/top", "qcow2", "/d", "raw", unsafe=False,
                    reads=2 * 1024**3)
    (args,), kwargs = run.call_args
    assert args == ["qemu-img", "rebase", "-f", "qcow2", "-b", "/d", "-F",
                    "raw", "/top"]
    wanted = qemu_img.data_limits(2 * 1024**3)
    assert (kwargs["prlimit"].cpu_time, kwargs["prlimit"].address_space) == (
        wanted.cpu_time, wanted.address_space)
