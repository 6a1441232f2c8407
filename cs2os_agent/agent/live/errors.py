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
