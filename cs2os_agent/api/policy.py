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


def authorize(context, action, target=None):
    """Raise PolicyNotAuthorized unless ``context`` may do ``action``."""
    target = target or {"project_id": context.project_id,
                        "user_id": context.user_id}
    init().authorize(action, target, context, do_raise=True,
                     exc=exception.PolicyNotAuthorized, action=action)
