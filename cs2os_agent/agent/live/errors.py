"""The live move's errors: refused before anything changed, or failed."""

from cs2os_agent.common import exception


class LiveMoveRefused(exception.Invalid):
    """A check before the move failed: A still runs, B was not touched."""

    msg_fmt = "live move refused: %(reason)s"


class BadSaveHeader(LiveMoveRefused):
    """A libvirt save-image header this code does not read or write."""

    msg_fmt = "not a libvirt save-image header this code handles: %(reason)s"


class LiveMoveFailed(exception.Cs2osException):
    """The move failed and was undone: A runs again, B is shut off."""

    msg_fmt = ("live move of %(source)s into %(target)s failed and was "
               "undone (%(source)s runs again): %(reason)s")


class LiveMoveIncomplete(exception.Cs2osException):
    """The move failed where it could not be undone safely: a person must
    look.  The message says which domain holds the guest."""

    msg_fmt = ("live move of %(source)s into %(target)s needs an operator: "
               "%(reason)s")


class HopRefused(LiveMoveRefused):
    """The first hop (libvirt's migration onto the Nova host) did not
    start, or libvirt refused it before the guest moved: A runs on the
    source, unchanged."""

    msg_fmt = ("hop of %(source)s to %(dest)s refused (%(source)s still "
               "runs on the source): %(reason)s")


class HopFailed(exception.Cs2osException):
    """libvirt's migration failed after it began; libvirt resumed A on the
    source (checked: A runs, no copy runs on the destination)."""

    msg_fmt = ("hop of %(source)s to %(dest)s failed (%(source)s runs on "
               "the source again): %(reason)s")


class HopIncomplete(exception.Cs2osException):
    """The hop ended in a state this code does not undo by itself: a
    person must look.  The message says where the guest is."""

    msg_fmt = "hop of %(source)s to %(dest)s needs an operator: %(reason)s"


def libvirt_message(exc):
    """A libvirtError's own message (its str() may be empty)."""
    return exc.get_error_message() or str(exc)


def for_rpc(exc):
    """The error as the one the conductor tells apart across RPC
    (``exception.LiveRefused`` / ``LiveFailed`` / ``LiveIncomplete``);
    anything else unchanged."""
    if isinstance(exc, (HopIncomplete, LiveMoveIncomplete)):
        return exception.LiveIncomplete(reason=str(exc))
    if isinstance(exc, (HopFailed, LiveMoveFailed)):
        return exception.LiveFailed(reason=str(exc))
    if isinstance(exc, LiveMoveRefused):  # HopRefused too
        return exception.LiveRefused(reason=str(exc))
    return exc
