"""cs2os exception types.

Every error the project raises on purpose is a subclass of
:class:`Cs2osException`: a ``msg_fmt`` template filled from keyword
arguments (the os-brick/nova pattern).  They are built so that they survive
an oslo.messaging round trip: the RPC layer re-creates a remote exception as
``cls(message, **kwargs)``, so ``__init__`` accepts a ready message and keeps
every keyword argument JSON-serialisable.
"""

import oslo_messaging as messaging
from oslo_log import log as logging

LOG = logging.getLogger(__name__)


def _rpc_safe(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Cs2osException(Exception):
    """Base exception; subclasses set ``msg_fmt`` and ``code``."""

    msg_fmt = "An unknown error occurred."
    # An HTTP-like status for the REST API to map onto.
    code = 500

    def __init__(self, message=None, **kwargs):
        self.kwargs = {k: _rpc_safe(v) for k, v in kwargs.items()}
        if not message:
            try:
                message = self.msg_fmt % self.kwargs
            except (KeyError, TypeError, ValueError):
                # A programming error in a caller must not hide the real
                # failure: keep the template and say what was passed.
                LOG.exception(
                    "Cannot format %s with %s",
                    type(self).__name__,
                    sorted(self.kwargs),
                )
                message = self.msg_fmt
        self.message = message
        super().__init__(message)

    def __str__(self):
        return self.message


def describe(exc):
    """The message of ``exc`` for a person: an exception that crossed RPC
    carries the remote traceback in str(), which belongs in logs only."""
    if isinstance(exc, Cs2osException):
        return exc.message
    if isinstance(exc, messaging.RemoteError):
        return "%s: %s" % (exc.exc_type, exc.value)
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) \
        else str(exc)
    text = text.split("Traceback (most recent call last)")[0].strip()
    if type(exc).__module__ == "builtins":
        # KeyError('k') alone says nothing; its name does.
        return "%s: %s" % (name_of(exc), text)
    return text


def name_of(exc):
    """Our exception's class name, also for its RPC-received copy (which
    oslo.messaging names ``<Name>_Remote``)."""
    return type(exc).__name__.removesuffix("_Remote")


class Invalid(Cs2osException):
    msg_fmt = "Invalid request: %(reason)s"
    code = 400


class GuestViewTooLong(Invalid):
    msg_fmt = ("Raw guest view %(path)s is %(actual)d bytes, more than the "
               "virtual size %(size)d: its tail is no guest's")


class InvalidSource(Invalid):
    msg_fmt = "Invalid overlay source %(source)s: %(reason)s"


class SourceNotAllowed(Invalid):
    msg_fmt = (
        "Overlay source %(path)s is outside the allowed source roots "
        "%(roots)s ([agent] allowed_source_roots)"
    )
    code = 403


class SourceNotFound(Cs2osException):
    msg_fmt = "Overlay source %(path)s does not exist"
    code = 404


class SourceUnreadable(Cs2osException):
    msg_fmt = "Cannot read overlay source %(path)s: %(reason)s"
    code = 403


class TransferFailed(Cs2osException):
    msg_fmt = "Copying %(source)s to %(dest)s failed: %(reason)s"


class NotQcow2(Invalid):
    msg_fmt = (
        "%(path)s is not a qcow2 image (detected: %(detected)s); "
        "CloudStack KVM volumes on NFS primary storage are qcow2"
    )


class UnsafeImage(Invalid):
    msg_fmt = "Image %(path)s failed the safety checks: %(reason)s"


class ImageCorrupt(Invalid):
    msg_fmt = "Image %(path)s is corrupt: %(reason)s"


class OverlayTooLarge(Invalid):
    msg_fmt = (
        "Overlay virtual size %(overlay_size)d bytes exceeds the instance "
        "disk's %(disk_size)d bytes; boot the server with a flavor whose "
        "root disk is at least %(overlay_size)d bytes"
    )
    code = 409


class QemuImgError(Cs2osException):
    msg_fmt = (
        "qemu-img %(command)s failed (exit code %(exit_code)s): %(stderr)s"
    )


class QemuImgTimeout(QemuImgError):
    msg_fmt = "qemu-img %(command)s was stopped: %(reason)s"


class ImagesDiffer(Cs2osException):
    msg_fmt = "Images %(left)s and %(right)s differ: %(detail)s"
    code = 409


class InstanceNotFound(Cs2osException):
    msg_fmt = "Instance %(instance_uuid)s has no libvirt domain on %(host)s"
    code = 404


class InstanceDiskNotFound(Cs2osException):
    msg_fmt = "Instance %(instance_uuid)s: %(reason)s"
    code = 409


class InstanceDiskOutsideInstancesPath(Cs2osException):
    msg_fmt = (
        "Instance %(instance_uuid)s root disk %(path)s is not under "
        "[agent] instances_path %(instances_path)s"
    )
    code = 409


class DomainNotShutOff(Cs2osException):
    msg_fmt = (
        "Instance %(instance_uuid)s domain is %(state)s; it must be shut "
        "off (stop the server through Nova) before its disk can be swapped"
    )
    code = 409


class NothingStaged(Cs2osException):
    msg_fmt = (
        "Instance %(instance_uuid)s has no staged overlay %(path)s; run "
        "sync_overlay first"
    )
    code = 409


class StagedImageInvalid(Cs2osException):
    msg_fmt = "Staged overlay %(path)s failed verification: %(reason)s"
    code = 409


class MigrationBusy(Cs2osException):
    msg_fmt = (
        "Instance %(instance_uuid)s is busy with migration %(owner)s; "
        "refusing %(migration_id)s"
    )
    code = 409


class MigrationCancelled(Cs2osException):
    msg_fmt = "Migration %(migration_id)s was cancelled during %(step)s"
    code = 409


class LibvirtError(Cs2osException):
    msg_fmt = "libvirt %(operation)s failed: %(reason)s"


class MigrationNotFound(Cs2osException):
    msg_fmt = "Migration %(migration_id)s not found"
    code = 404


class MigrationStateConflict(Cs2osException):
    msg_fmt = "Migration %(migration_id)s is %(state)s: cannot %(action)s"
    code = 409


class MigrationConflict(Cs2osException):
    msg_fmt = (
        "CloudStack VM %(vm)s already has an active migration %(active)s "
        "(%(state)s): one migration per VM at a time; wait for it, or "
        "cancel it"
    )
    code = 409


class IdempotencyKeyReused(Cs2osException):
    msg_fmt = (
        "Idempotency key %(key)s created migration %(migration_id)s from a "
        "different request (%(detail)s); use a new key for a new request"
    )
    code = 422


class LeaseLost(Cs2osException):
    msg_fmt = (
        "Conductor %(conductor)s no longer holds migration "
        "%(migration_id)s (epoch %(epoch)s; another conductor took it "
        "over): it stops without acting"
    )
    code = 409


class SourceNotStopped(Cs2osException):
    msg_fmt = (
        "CloudStack VM %(vm)s was started again while it was being moved "
        "(%(detail)s): the migration stops before the Nova server runs the "
        "migrated disk, so only one copy of the guest runs"
    )
    code = 409


# -- the ssh transport -------------------------------------------------------


class RemoteSourceNotAllowed(SourceNotAllowed):
    msg_fmt = (
        "Overlay source %(path)s is outside the allowed remote source roots "
        "%(roots)s ([transfer] remote_source_roots)"
    )


class TransportConfigInvalid(Cs2osException):
    """A [transfer] option a transport needs is unusable (a key or
    keyring file, a client library)."""

    msg_fmt = "[transfer] %(option)s = %(path)s cannot be used: %(reason)s"


class SshClientConfigInvalid(TransportConfigInvalid):
    pass


class SourceHostKeyRefused(Cs2osException):
    msg_fmt = (
        "Refusing %(host)s port %(port)s: its SSH host key could not be "
        "verified against %(known_hosts)s ([transfer] ssh_known_hosts_file): "
        "%(reason)s"
    )
    code = 403


class SourceHostKeyUnknown(SourceHostKeyRefused):
    msg_fmt = (
        "Refusing %(host)s port %(port)s: its SSH host key is not in "
        "%(known_hosts)s ([transfer] ssh_known_hosts_file). Verify the "
        "host's key fingerprint out of band (on the host: ssh-keygen -lf "
        "/etc/ssh/ssh_host_ed25519_key.pub), then add it with: "
        "ssh-keyscan -p %(port)s %(host)s >> %(known_hosts)s"
    )


class SourceHostKeyChanged(SourceHostKeyRefused):
    msg_fmt = (
        "Refusing %(host)s port %(port)s: its SSH host key does not match "
        "the one in %(known_hosts)s ([transfer] ssh_known_hosts_file); the "
        "host was reinstalled or someone is intercepting the connection. "
        "Only after verifying the new key's fingerprint out of band, "
        "replace the old one: ssh-keygen -f %(known_hosts)s -R %(entry)s "
        "&& ssh-keyscan -p %(port)s %(host)s >> %(known_hosts)s"
    )


class SourceUnreachable(Cs2osException):
    msg_fmt = "Cannot reach %(host)s port %(port)s over SSH: %(reason)s"
    code = 503


class SourceAuthFailed(Cs2osException):
    msg_fmt = (
        "SSH login as %(user)s to %(host)s port %(port)s was refused "
        "(%(reason)s); the public key of [transfer] ssh_private_key_file "
        "must be in that user's authorized_keys on the host"
    )
    code = 403


class SourceSshError(Cs2osException):
    msg_fmt = "SSH to %(host)s port %(port)s failed: %(reason)s"
    code = 502


class SourceRemoteCommandFailed(Cs2osException):
    msg_fmt = (
        "%(command)s on %(host)s port %(port)s failed (exit code "
        "%(exit_code)s): %(stderr)s"
    )
    code = 502


class OpenStackError(Cs2osException):
    msg_fmt = "OpenStack: %(operation)s failed: %(reason)s"
    code = 502


class StartRefused(OpenStackError):
    """Nova refused to start a server outright (not allowed, or no such
    server): it started nothing."""


class NfsServerUnreachable(SourceUnreachable):
    msg_fmt = (
        "Cannot reach NFS server %(host)s port %(port)s (%(version)s): "
        "%(reason)s"
    )


class NfsExportUnavailable(Cs2osException):
    msg_fmt = (
        "NFS server %(server)s does not export %(export)s to this node, or "
        "refused it (%(version)s): %(reason)s"
    )
    code = 404


class NfsClientUnavailable(Cs2osException):
    msg_fmt = (
        "The nfs transport cannot load libnfs: %(reason)s; install libnfs "
        "(Debian: libnfs13, pulled in by libnfs-utils; tools/install-deps.sh)"
    )


class NfsExportNotAllowed(SourceNotAllowed):
    msg_fmt = (
        "NFS export %(path)s is not one of [transfer] nfs_allowed_exports "
        "%(roots)s"
    )


# -- cs2os-api ----------------------------------------------------------------


class PolicyNotAuthorized(Cs2osException):
    msg_fmt = "Policy does not allow %(action)s to be performed"
    code = 403


class ConductorUnavailable(Cs2osException):
    msg_fmt = (
        "cs2os-conductor did not answer within %(timeout)s s; check that it "
        "runs and reaches the message bus"
    )
    code = 503


# -- hostile input: what is never opened, what qemu-img may not write ---------


class SourceNotRegularFile(InvalidSource):
    msg_fmt = (
        "Source %(path)s is a %(kind)s, not a regular file: refused without "
        "reading it (a FIFO or device node could block the reader or act "
        "when opened; a symlink could lead anywhere)"
    )


class QemuImgOutputTooLarge(QemuImgError):
    msg_fmt = (
        "qemu-img %(command)s was stopped: it tried to write past its file "
        "size limit of %(limit)s bytes (%(reason)s)"
    )


class ImageExpansionRefused(Invalid):
    msg_fmt = (
        "Refusing to expand %(path)s: its %(allocated)d bytes allocated on "
        "disk would be written out as %(expanded)d bytes of guest data; "
        "%(reason)s"
    )
    code = 413


class PlanNotFound(Cs2osException):
    msg_fmt = "Plan %(plan_id)s not found"
    code = 404


class PlanSelectsNothing(Cs2osException):
    msg_fmt = "No CloudStack VM matches the selector %(selector)s"
    code = 404


class PlanStateConflict(Cs2osException):
    msg_fmt = "Plan %(plan_id)s is %(state)s: cannot %(action)s"
    code = 409


class VolumeNotAttached(Cs2osException):
    msg_fmt = ("Cinder volume %(volume_id)s is not attached to instance "
               "%(instance_uuid)s: its domain has no disk with that serial")
    code = 409


class VolumeNotWritable(Cs2osException):
    msg_fmt = ("cs2os cannot write Cinder volume %(volume_id)s of instance "
               "%(instance_uuid)s: %(reason)s")
    code = 409


class LiveRefused(Invalid):
    """Live mode: refused before anything changed."""
    msg_fmt = "live migration refused: %(reason)s"


class LiveFailed(Cs2osException):
    msg_fmt = "live migration failed and was undone: %(reason)s"


class LiveIncomplete(Cs2osException):
    msg_fmt = "live migration needs an operator: %(reason)s"
