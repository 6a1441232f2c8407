"""prepare_mirror's ``source``: every field checked before anything runs."""

import os
import types

import pytest

from cs2os_agent.agent import rpcapi
from cs2os_agent.agent.mirror import request
from cs2os_agent.common import exception
from cs2os_agent.conf import mirror as mirror_conf


@pytest.fixture
def conf(tmp_path):
    roots = tmp_path / "mnt"
    (roots / "pool").mkdir(parents=True)
    (roots / "pool" / "template").write_bytes(b"")
    return types.SimpleNamespace(
        transfer=types.SimpleNamespace(ssh_user="root"),
        agent=types.SimpleNamespace(allowed_source_roots=[str(roots)]))


def source(**kw):
    s = {"transport": "ssh", "host": "kvm-01", "port": 22,
         "virtual_size": 8 << 30, "socket_owner": "64055:64055",
         "base_proof": {"algorithm": "guest_sha256", "digest": "ab",
                        "virtual_size": 1}}
    s.update(kw)
    return s


def test_a_good_request(conf):
    req = request.MirrorRequest.from_dict(source(), conf)
    assert (req.endpoint.host, req.endpoint.port, req.endpoint.user) == (
        "kvm-01", 22, "root")
    assert req.virtual_size == 8 << 30
    assert req.socket_owner == "64055:64055"


@pytest.mark.parametrize("bad", [
    {"transport": "path"}, {"virtual_size": 0}, {"virtual_size": "1"},
    {"virtual_size": True}, {"host": "-oProxyCommand=x"}, {"port": 70000},
    {"user": "a b"}, {"extra": 1},
])
def test_bad_fields_refused(conf, bad):
    with pytest.raises(exception.Invalid):
        request.MirrorRequest.from_dict(source(**bad), conf)


def test_socket_owner_must_be_numeric(conf):
    with pytest.raises(exception.Invalid):
        request.MirrorRequest.from_dict(
            source(socket_owner="libvirt-qemu:kvm"), conf)


def test_template_must_be_under_the_allowed_roots(conf, tmp_path):
    root = conf.agent.allowed_source_roots[0]
    template = os.path.join(root, "pool", "template")
    req = request.MirrorRequest.from_dict(source(base_proof={
        "template": template, "template_format": "qcow2"}), conf)
    assert req.base_proof["template"] == template
    link = os.path.join(root, "pool", "link")
    os.symlink("/etc/passwd", link)
    for path in ("/etc/passwd", link, os.path.join(root, "..", "x")):
        with pytest.raises(exception.SourceNotAllowed):
            request.MirrorRequest.from_dict(source(base_proof={
                "template": path, "template_format": "raw"}), conf)


def test_api_version_and_options():
    assert rpcapi.RPC_API_VERSION == "1.6"
    for name in ("prepare_mirror", "mirror_status", "finish_mirror",
                 "abort_mirror"):
        assert callable(getattr(rpcapi.AgentAPI, name))
    (group, opts), = mirror_conf.list_opts().items()
    assert group.name == "mirror"
    assert all(o.help for o in opts)
