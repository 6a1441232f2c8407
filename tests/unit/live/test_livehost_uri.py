"""The agent opens a KVM host for the live hop under the same URI rules as
the conductor (cs2os_agent.kvmuri): host key verification cannot be
turned off, known_hosts=FILE pins the key, and the option is named."""

import types
import urllib.parse

import pytest

from cs2os_agent.agent.live import livehost
from cs2os_agent.common import exception


def _conf(uri):
    return types.SimpleNamespace(live=types.SimpleNamespace(
        kvm_libvirt_uri=uri))


@pytest.mark.parametrize("uri", [
    "qemu+ssh://{host}/system?no_verify=1",
    "qemu+libssh://{host}/system",
    "qemu+ssh://kvm-1/system",
])
def test_an_unsafe_or_hostless_uri_is_refused_naming_the_option(uri):
    with pytest.raises(exception.Invalid) as err:
        livehost.Kvm(_conf(uri), "10.0.0.5")
    assert "[live] kvm_libvirt_uri" in str(err.value)


def test_known_hosts_pins_the_key_and_the_host_is_filled_in():
    kvm = livehost.Kvm(_conf("qemu+ssh://root@{host}/system?keyfile=/k/id&"
                             "known_hosts=/k/known"), "10.0.0.5")
    parts = urllib.parse.urlsplit(kvm.uri)
    query = urllib.parse.parse_qs(parts.query)
    assert parts.netloc == "root@10.0.0.5"
    assert "known_hosts" not in query
    with open(query["command"][0]) as f:
        assert "UserKnownHostsFile=/k/known" in f.read()
