"""The VM's key pair as a Nova key pair, against a fake Nova.

The real thing (the server's key_name on the minicloud's Nova) is in
tests/e2e/test_ownership.py.
"""

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import keypair

# A public key and its fingerprint as `ssh-keygen -l -E md5` printed it
# (the e2e test makes its key with ssh-keygen and compares with CloudStack's
# stand-in, which computes fingerprints its own way).
PUBLIC_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEmTlcQERmZLbSYtM4lgzWqw"
              "qUbecHeVuOrTNg3FLkBW")
SSH_KEYGEN_MD5 = "f4:65:41:94:82:79:9d:5d:44:ba:7e:ea:30:e9:60:56"


@pytest.fixture
def public_key():
    return PUBLIC_KEY


class Nova:
    def __init__(self):
        self.pairs = {}

    def ensure_keypair(self, name, public_key):
        if name in self.pairs:
            return True
        self.pairs[name] = public_key
        return False


class Ctx:
    def __init__(self):
        self.openstack = Nova()
        self.results = {}

    def guard(self):
        pass

    def result(self, **values):
        self.results.update(values)


def test_the_fingerprint_is_ssh_keygens_md5():
    assert keypair.fingerprint(PUBLIC_KEY + " a comment") == SSH_KEYGEN_MD5


def test_the_first_key_pair_is_carried_and_reused(public_key):
    vm = {"keypairs": "deploy,backup",
          "details": {"SSH.PublicKey": public_key + "\nssh-rsa AAAA x\n"}}
    ctx = Ctx()
    name = keypair.ensure(ctx, vm)
    assert name == "deploy-" + keypair.fingerprint(public_key).replace(
        ":", "")[:12]
    assert ctx.openstack.pairs == {name: public_key}
    assert ctx.results["keypair"]["reused"] is False
    assert ctx.results["keypair"]["not_carried"] == ["backup"]
    assert keypair.ensure(ctx, vm) == name
    assert ctx.results["keypair"]["reused"] is True


def test_names_without_a_public_key_are_reported_not_guessed():
    ctx = Ctx()
    assert keypair.ensure(ctx, {"keypairs": "deploy", "details": {}}) is None
    assert ctx.results["keypair"]["not_carried"] == ["deploy"]
    assert "no public key" in ctx.results["keypair"]["why_not_carried"]
    assert ctx.openstack.pairs == {}
    # No key pair at all: nothing to say.
    ctx = Ctx()
    assert keypair.ensure(ctx, {"details": {}}) is None
    assert ctx.results == {}


def test_a_garbled_key_is_a_clear_error():
    with pytest.raises(exception.Invalid) as info:
        keypair.fingerprint("ssh-ed25519 !!!notbase64")
    assert "not an OpenSSH public key" in str(info.value)
