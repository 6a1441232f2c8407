"""The policy enforcer of cs2os-api."""

from oslo_policy import policy

from cs2os_agent import conf
from cs2os_agent.api import policies
from cs2os_agent.common import exception

_ENFORCER = None


def init(config=None):
    global _ENFORCER
    if _ENFORCER is None:
        _ENFORCER = policy.Enforcer(config or conf.CONF)
        _ENFORCER.register_defaults(policies.list_rules())
    return _ENFORCER


def reset():
    global _ENFORCER
    _ENFORCER = None


def get_enforcer():
    """For the oslopolicy-* commands (``oslo.policy.enforcer``)."""
    conf.CONF([], project="cs2os")
    return init()


def _target(context):
    return {"project_id": context.project_id, "user_id": context.user_id}


def authorize(context, action, target=None):
    """Raise PolicyNotAuthorized unless ``context`` may do ``action``."""
    init().authorize(action, target or _target(context), context,
                     do_raise=True, exc=exception.PolicyNotAuthorized,
                     action=action)


def authorize_any(context, actions):
    """Raise PolicyNotAuthorized unless ``context`` may do one of
    ``actions``: the check an endpoint serving several rules can make
    before it reads the request that says which one applies."""
    enforcer = init()
    if not any(enforcer.authorize(a, _target(context), context)
               for a in actions):
        raise exception.PolicyNotAuthorized(
            action="any of " + ", ".join(actions))
