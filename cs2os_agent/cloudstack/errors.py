"""What can go wrong talking to CloudStack's management API.

They cross RPC from the conductor to cs2os-api (common/rpc.py allows this
module), so they follow :class:`~cs2os_agent.common.exception.Cs2osException`.
"""

from cs2os_agent.common import exception


class CloudStackError(exception.Cs2osException):
    msg_fmt = "CloudStack %(command)s failed: %(reason)s"
    code = 502


class CloudStackNotConfigured(CloudStackError):
    msg_fmt = "[cloudstack] %(option)s is not set"
    code = 500


class CloudStackUnreachable(CloudStackError):
    msg_fmt = (
        "CloudStack management server %(endpoint)s did not answer "
        "%(command)s: %(reason)s"
    )
    code = 503


class CloudStackAuthFailed(CloudStackError):
    msg_fmt = (
        "CloudStack refused %(command)s (error %(errorcode)s: "
        "%(errortext)s); check [cloudstack] api_key and secret_key, that the "
        "key belongs to an enabled root admin, and this host's clock (signed "
        "requests expire)"
    )


class CloudStackAPIError(CloudStackError):
    msg_fmt = (
        "CloudStack %(command)s returned error %(errorcode)s: %(errortext)s"
    )


class CloudStackVMNotFound(CloudStackError):
    msg_fmt = "CloudStack has no VM with id or name %(ref)s"
    code = 404


class CloudStackVMAmbiguous(CloudStackError):
    msg_fmt = (
        "CloudStack has %(count)s VMs named %(ref)s (ids %(ids)s); name the "
        "one to move by its id"
    )
    code = 409


class CloudStackObjectNotFound(CloudStackError):
    msg_fmt = "CloudStack has no %(kind)s %(id)s"
    code = 404


class CloudStackJobFailed(CloudStackError):
    msg_fmt = (
        "CloudStack job %(job_id)s (%(command)s %(target)s) failed with error "
        "%(errorcode)s: %(errortext)s"
    )


class CloudStackJobTimeout(CloudStackError):
    msg_fmt = (
        "CloudStack job %(job_id)s (%(command)s %(target)s) did not finish "
        "within %(timeout)s seconds ([cloudstack] job_timeout); it may still "
        "finish in CloudStack"
    )
    code = 504
