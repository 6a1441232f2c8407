"""The overlay's backing chain as its files' headers say, with the files
standing in for a transport.  The real thing (a two-layer volume migrated
into Nova) is tests/e2e/test_volume_chains.py."""

import contextlib
import types

import pytest

from cs2os_agent import qcow2
from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import chain
from tests.unit.test_qcow2 import qcow2_header

POOL = "6a1c5e0e-0000-4000-8000-000000000001"
VM = {"name": "web-1", "overlay_path": "/mnt/%s/vol" % POOL,
      "root_volume": {"storage": {"id": POOL}}}


def conf():
    return types.SimpleNamespace(conductor=types.SimpleNamespace(
        overlay_transport="path", primary_storage_mount="/pools"))


@pytest.fixture
def files(monkeypatch):
    """{pool-relative name: backing name or None}, served as headers."""
    made = {}

    @contextlib.contextmanager
    def get_source(source, _conf):
        name = source["path"].rsplit("/", 1)[-1]
        backing = made[name]
        header = qcow2_header(backing=(
            "/mnt/%s/%s" % (POOL, backing)).encode() if backing else b"")
        yield types.SimpleNamespace(
            read_header=lambda n: header[:n], describe=lambda: name)

    monkeypatch.setattr(chain.transfer, "get_source", get_source)
    return made


def walk(files, top):
    ctx = types.SimpleNamespace(conf=conf())
    header = qcow2.inspect_header(qcow2_header(
        backing=("/mnt/%s/%s" % (POOL, top)).encode()), "vol")
    return chain.walk(ctx, VM, header)


def test_the_bottom_file_is_the_template_and_the_rest_are_layers(files):
    files.update({"i1": "i2", "i2": "tpl", "tpl": None})
    template, layers = walk(files, "i1")
    assert template == "/mnt/%s/tpl" % POOL
    assert [s["path"] for s in layers] == ["/pools/%s/i1" % POOL,
                                            "/pools/%s/i2" % POOL]


def test_a_plain_overlay_has_no_layers(files):
    files["tpl"] = None
    assert walk(files, "tpl") == ("/mnt/%s/tpl" % POOL, [])
    standalone = qcow2.inspect_header(qcow2_header(), "vol")
    assert chain.walk(types.SimpleNamespace(conf=conf()), VM,
                      standalone) == (None, [])


def test_a_loop_is_refused_naming_the_file(files):
    files.update({"i1": "i2", "i2": "i1"})
    with pytest.raises(exception.Invalid, match="loops: .*i1 comes twice"):
        walk(files, "i1")
    files.update({"i1": "vol"})  # back to the volume itself
    with pytest.raises(exception.Invalid, match="loops"):
        walk(files, "i1")


def test_a_chain_too_deep_is_refused(files):
    for n in range(chain.MAX_LAYERS + 1):
        files["i%d" % n] = "i%d" % (n + 1)
    files["i%d" % (chain.MAX_LAYERS + 1)] = None
    with pytest.raises(exception.Invalid, match="more than 16 layers"):
        walk(files, "i0")
