"""The policy enforcer of cs2os-api.

The credentials are the caller's RequestContext: oslo.policy reads them
through its to_policy_values() (roles, project_id, user_id, the token's
scope), which ContextMiddleware filled from auth_token's headers.  The
target is what is acted on: the caller's own project for "may this
caller use the endpoint at all", a migration's target project for "may
it see or act on this one" (record_target).
"""

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


def _without_none(target):
    # A missing key fails a "project_id:%(project_id)s" check; None would
    # be formatted as "None" and match a token without a project, whose
    # project_id is None too.
    return {k: v for k, v in target.items() if v is not None}


def _target(context):
    return _without_none({"project_id": context.project_id,
                          "user_id": context.user_id})


def record_target(record):
    """A migration as a policy target: the Keystone project its server
    lands in (not the creator's).  Not known yet (before the first step
    resolved it): no project at all, which only admins pass."""
    return _without_none({"project_id": record.get("target_project_id")})


def check(context, action, target=None):
    """Whether ``context`` may do ``action`` (on ``target``, default:
    its own project); a token of a scope the rule is not for may not."""
    target = _target(context) if target is None else target
    try:
        return init().authorize(action, target, context)
    except policy.InvalidScope:
        return False


def authorize(context, action, target=None):
    """Raise PolicyNotAuthorized unless ``context`` may do ``action``."""
    target = _target(context) if target is None else target
    try:
        init().authorize(action, target, context, do_raise=True,
                         exc=exception.PolicyNotAuthorized, action=action)
    except policy.InvalidScope:
        # A system- or domain-scoped token on a project-scoped rule: a
        # 403 like any refusal, not oslo.policy's own exception (a 500).
        raise exception.PolicyNotAuthorized(action=action) from None


def authorize_any(context, actions):
    """Raise PolicyNotAuthorized unless ``context`` may do one of
    ``actions``: the check an endpoint serving several rules can make
    before it reads the request that says which one applies."""
    if not any(check(context, a) for a in actions):
        raise exception.PolicyNotAuthorized(
            action="any of " + ", ".join(actions))
