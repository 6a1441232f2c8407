"""The ``source`` of a ``prepare_mirror`` call, checked field by field.

::

    {"transport": "ssh", "host": H, "port": 22, "user": U,
     "virtual_size": N,            # the source disk's (T gets this size)
     "socket_owner": "64055:64055",  # the source QEMU's uid:gid (DAC label)
     "base_proof": {...}}      # see agent/mirror/baseproof.prove

The host, port and user are checked as the ``ssh`` transport checks them.
A template named by ``base_proof`` must lie under ``[agent]
allowed_source_roots`` (symlinks resolved): the agent reads nothing else.
"""

import dataclasses
import os

from cs2os_agent.agent.mirror import tunnel
from cs2os_agent.common import exception
from cs2os_agent.transfer import sshcmd

_FIELDS = {"transport", "host", "port", "user", "virtual_size",
           "socket_owner", "base_proof"}


def _invalid(reason):
    return exception.InvalidSource(source="mirror", reason=reason)


@dataclasses.dataclass(frozen=True)
class MirrorRequest:
    endpoint: tunnel.Endpoint
    virtual_size: int
    socket_owner: str
    base_proof: dict

    @classmethod
    def from_dict(cls, source, conf):
        if not isinstance(source, dict):
            raise _invalid("the source must be an object")
        unknown = set(source) - _FIELDS
        if unknown:
            raise _invalid("unknown field(s) %s" % ", ".join(sorted(unknown)))
        if source.get("transport") != "ssh":
            raise _invalid("transport must be 'ssh' (the tunnel to the "
                           "CloudStack KVM host)")
        size = source.get("virtual_size")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise _invalid("virtual_size must be the source disk's virtual "
                           "size in bytes")
        endpoint = tunnel.Endpoint(
            host=sshcmd.valid_host(source.get("host")),
            port=sshcmd.valid_port(source.get("port", sshcmd.DEFAULT_PORT)),
            user=sshcmd.valid_user(source.get("user")
                                   or conf.transfer.ssh_user))
        proof = source.get("base_proof")
        if isinstance(proof, dict) and "template" in proof:
            proof = dict(proof, template=_allowed_template(
                proof["template"], conf.agent.allowed_source_roots))
        return cls(endpoint, size, tunnel.valid_owner(
            source.get("socket_owner")), proof)


def _allowed_template(path, roots):
    if not isinstance(path, str) or not os.path.isabs(path):
        raise _invalid("base_proof.template must be an absolute path")
    real = os.path.realpath(path)
    for root in roots:
        root = os.path.realpath(root)
        if os.path.commonpath([real, root]) == root:
            return real
    raise exception.SourceNotAllowed(path=path,
                                     roots=", ".join(roots) or "(none)")
