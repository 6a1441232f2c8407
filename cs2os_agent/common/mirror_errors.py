"""What can go wrong in a warm migration's mirror: on the agent's target
side (the storage daemon, the tunnel, the base proof) and on the source
host (libvirt's block copy, the KVM host, the source domain).

They cross RPC (common/rpc.py allows this module), so they follow
:class:`~cs2os_agent.common.exception.Cs2osException`.
"""

from cs2os_agent.common import exception


class MirrorError(exception.Cs2osException):
    msg_fmt = "Mirror failed: %(reason)s"
    code = 502


class StorageDaemonError(MirrorError):
    msg_fmt = "qemu-storage-daemon: %(command)s failed: %(reason)s"


class StorageDaemonDied(StorageDaemonError):
    msg_fmt = (
        "qemu-storage-daemon (pid %(pid)s) exited (%(status)s) while "
        "%(during)s: %(stderr)s; the mirror target is not durable and the "
        "mirror must start again"
    )


class MirrorTunnelFailed(MirrorError):
    msg_fmt = (
        "The SSH tunnel to %(host)s port %(port)s for the mirror could not "
        "be opened: %(reason)s"
    )


class MirrorTunnelDied(MirrorTunnelFailed):
    msg_fmt = (
        "The SSH tunnel to %(host)s port %(port)s for the mirror ended "
        "(%(status)s): %(reason)s"
    )


class BlockCopyFailed(MirrorError):
    msg_fmt = (
        "Block copy of %(domain)s disk %(disk)s: %(reason)s"
    )


class BlockCopyTimeout(BlockCopyFailed):
    msg_fmt = (
        "Block copy of %(domain)s disk %(disk)s did not become ready within "
        "%(timeout)s s (%(cur)s of %(end)s bytes copied)"
    )


class BaseNotVerified(exception.Invalid):
    msg_fmt = (
        "Refusing a shallow mirror onto base %(base)s: %(reason)s. Only the "
        "top layer is mirrored, so the base must be proven to hold the same "
        "guest-visible bytes as the CloudStack template (a recorded content "
        "digest or a template to compare with)"
    )
    code = 409


class BaseMismatch(BaseNotVerified):
    msg_fmt = (
        "Refusing a shallow mirror onto base %(base)s: it differs from the "
        "CloudStack template (%(detail)s); the guest would see wrong data"
    )


class MirrorNotFound(exception.Cs2osException):
    msg_fmt = (
        "No mirror target for migration %(migration_id)s on this agent; "
        "prepare_mirror first"
    )
    code = 404




class KvmHostUnreachable(exception.Cs2osException):
    msg_fmt = (
        "Cannot use libvirt on the CloudStack KVM host %(uri)s: %(reason)s "
        "([cloudstack] kvm_libvirt_uri; the host key must be in its "
        "known_hosts file)"
    )
    code = 502


class SourceDomainNotFound(exception.Cs2osException):
    msg_fmt = (
        "The CloudStack VM's domain %(domain)s does not run on %(uri)s"
    )
    code = 409
