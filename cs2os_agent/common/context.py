"""Request context carried with every RPC message."""

from oslo_context import context


class RequestContext(context.RequestContext):
    """The caller's identity (user, project, roles, request id)."""


def get_admin_context():
    """A context for work the service does on its own behalf."""
    return RequestContext(is_admin=True, overwrite=False)
