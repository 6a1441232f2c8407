"""The VM's SSH key pair as a Nova key pair: the server shows it as its
key_name, and Nova's metadata service hands cloud-init the same public key.

CloudStack keeps the names of a VM's key pairs (listVirtualMachines
``keypairs``, joined with ",") and their public keys in the VM's details
(``SSH.PublicKey``, one key per line): listSSHKeyPairs shows fingerprints,
never keys.  Nova key pairs belong to the user who boots the server, which
is cs2os's: the Nova key pair is named after the CloudStack one plus its
fingerprint, so that two owners' key pairs of the same name never meet,
and it is reused by every migration of a VM with that key.  Rollback
leaves it: other servers may use it.
"""

import base64
import binascii
import hashlib

from cs2os_agent.common import exception

PUBLIC_KEY_DETAIL = "SSH.PublicKey"
NAMES_DETAIL = "SSH.KeyPairNames"


def fingerprint(public_key):
    """CloudStack's: MD5 of the key blob, colon-separated hex."""
    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (IndexError, ValueError, binascii.Error):
        raise exception.Invalid(
            reason="the VM's SSH public key is not an OpenSSH public key "
            "line") from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def wanted(vm):
    """(CloudStack key pair name, public key) of the VM's first key pair,
    or None when it has none; ``others``: the names not carried (Nova takes
    one key pair per server)."""
    names = [n.strip() for n in (vm.get("keypairs") or "").split(",")
             if n.strip()]
    details = vm.get("details") or {}
    keys = [line.strip() for line in
            (details.get(PUBLIC_KEY_DETAIL) or "").splitlines()
            if line.strip()]
    if not names and not keys:
        return None, []
    if not keys:
        return None, names
    return (names[0] if names else "cloudstack", keys[0]), names[1:]


def nova_name(cloudstack_name, public_key):
    return "%s-%s" % (cloudstack_name,
                      fingerprint(public_key).replace(":", "")[:12])


def ensure(ctx, vm):
    """The Nova key pair name for the server, or None; what was done goes
    to the result."""
    pair, not_carried = wanted(vm)
    result = {}
    if not_carried:
        result["not_carried"] = not_carried
        result["why_not_carried"] = (
            "Nova takes one key pair per server" if pair else
            "CloudStack showed no public key for them (VM detail %s)"
            % PUBLIC_KEY_DETAIL)
    if pair is None:
        if result:
            ctx.result(keypair=result)
        return None
    cloudstack_name, public_key = pair
    name = nova_name(cloudstack_name, public_key)
    ctx.guard()
    reused = ctx.openstack.ensure_keypair(name, public_key)
    result.update(name=name, cloudstack_name=cloudstack_name,
                  fingerprint=fingerprint(public_key), reused=reused)
    ctx.result(keypair=result)
    return name
