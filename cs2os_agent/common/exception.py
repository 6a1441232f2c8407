"""cs2os exception types.

Every error the project raises on purpose is a subclass of
:class:`Cs2osException`: a ``msg_fmt`` template filled from keyword
arguments (the os-brick/nova pattern).  They are built so that they survive
an oslo.messaging round trip: the RPC layer re-creates a remote exception as
``cls(message, **kwargs)``, so ``__init__`` accepts a ready message and keeps
every keyword argument JSON-serialisable.
"""

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


class Invalid(Cs2osException):
    msg_fmt = "Invalid request: %(reason)s"
    code = 400


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
