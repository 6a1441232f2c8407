"""The CloudStack KVM host as the conductor reaches it (sourcehost/kvmhost.py):
its libvirt URI, checked, and the root disk and mirror export read from a
domain's live XML (the fake libvirt, tests/fakes/libvirt.py).
"""

import os
import shlex
import urllib.parse

import pytest

from cs2os_agent.common import exception
from cs2os_agent.common import nbd
from cs2os_agent.sourcehost import kvmhost
from tests.fakes import libvirt as fakes
from tests.unit.conductor.flow.warm_world import EXPORT


def test_uri_for_fills_in_the_host():
    template = "qemu+ssh://root@{host}:2222/system?keyfile=/id"
    assert kvmhost.uri_for(template, "10.0.0.5") == template.replace(
        "{host}", "10.0.0.5")
    assert "root@[fd00::5]:2222" in kvmhost.uri_for(template, "fd00::5")
    assert kvmhost.redact(kvmhost.uri_for(template, "h")) == \
        "qemu+ssh://root@h:2222/system"
    assert kvmhost.uri_for("qemu:///system?x={host}", "h")


def test_known_hosts_becomes_an_ssh_that_trusts_that_file_alone():
    uri = kvmhost.uri_for("qemu+ssh://root@{host}/system?keyfile=/k/id&"
                          "known_hosts=/k/known hosts", "h")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    assert "known_hosts" not in query and query["keyfile"] == ["/k/id"]
    command = query["command"][0]
    assert os.stat(command).st_mode & 0o777 == 0o700
    assert os.stat(os.path.dirname(command)).st_mode & 0o777 == 0o700
    with open(command) as f:
        script = f.read()
    assert shlex.split(script.splitlines()[1]) == [
        "exec", "ssh", "-o", "UserKnownHostsFile=/k/known hosts",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "$@"]
    # One wrapper per file, reused.
    assert kvmhost.uri_for("qemu+ssh://root@{host}/system?"
                           "known_hosts=/k/known hosts", "h2").endswith(
        urllib.parse.urlencode({"command": command}, safe="/"))


@pytest.mark.parametrize("template, words", [
    ("qemu+ssh://root@h/system", "must contain {host}"),
    ("qemu+ssh://root@{host}/system?no_verify=1", "no_verify"),
    ("qemu+ssh://root@{host}/system?known_hosts=/kh&command=/bin/ssh",
     "both known_hosts and command"),
    ("qemu+libssh://root@{host}/system?known_hosts=/kh",
     "qemu+libssh://: libvirt's libssh transport stalls"),
    ("qemu+libssh2://root@{host}/system?known_hosts=/kh",
     "qemu+libssh2://"),
])
def test_uri_for_refuses_unverified_host_keys_and_libssh(template, words):
    with pytest.raises(exception.Invalid) as err:
        kvmhost.uri_for(template, "10.0.0.5")
    assert words in str(err.value)


@pytest.mark.parametrize("host", ["", None, "a/b", "u@h", "h?x"])
def test_uri_for_refuses_odd_host_addresses(host):
    with pytest.raises(exception.Invalid):
        kvmhost.uri_for("qemu+ssh://{host}/system", host)


def test_root_disk_and_mirror_export_from_the_live_xml():
    dom = fakes.FakeDomain()
    assert kvmhost.root_disk(dom, "pool-1", "vol-1") == "vda"
    # The stand-in's layout: the host's /mnt lives under another root.
    dom.file = "/var/tmp/x/mnt/pool-1/vol-1"
    assert kvmhost.root_disk(dom, "pool-1", "vol-1") == "vda"
    with pytest.raises(exception.Invalid):
        kvmhost.root_disk(dom, "pool-2", "vol-1")
    assert kvmhost.mirror_export(dom, "vda") is None
    dom.blockCopy("vda", nbd.dest_xml(EXPORT, socket="/s"), {}, 0)
    assert kvmhost.mirror_export(dom, "vda") == EXPORT
    assert kvmhost.mirror_export(dom, "vdb") is None
