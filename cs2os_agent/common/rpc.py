"""The one place that builds oslo.messaging transports, clients, servers.

Modelled on cyborg/nova ``common/rpc.py``: every process calls :func:`init`
once after parsing its configuration; clients and servers are built here so
that they share the serializer and the list of exception modules that may
cross the bus.
"""

import oslo_messaging as messaging
from oslo_serialization import jsonutils

from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors

# Exceptions raised in these modules are re-created with their own type on
# the caller's side instead of arriving as a generic RemoteError.
ALLOWED_EXMODS = [exception.__name__, cloudstack_errors.__name__,
                  mirror_errors.__name__]

# oslo.messaging's default exchange is "openstack"; a dedicated one keeps
# cs2os topics apart from Nova's on a shared broker.
DEFAULT_EXCHANGE = "cs2os"

TRANSPORT = None


class JsonPayloadSerializer(messaging.NoOpSerializer):
    @staticmethod
    def serialize_entity(context, entity):
        return jsonutils.to_primitive(entity, convert_instances=True)


class RequestContextSerializer(messaging.Serializer):
    """Sends our RequestContext along with every message."""

    def __init__(self, base=None):
        self._base = base or JsonPayloadSerializer()

    def serialize_entity(self, context, entity):
        return self._base.serialize_entity(context, entity)

    def deserialize_entity(self, context, entity):
        return self._base.deserialize_entity(context, entity)

    def serialize_context(self, context):
        return context.to_dict()

    def deserialize_context(self, context):
        return cs2os_context.RequestContext.from_dict(context)


def set_defaults(control_exchange=DEFAULT_EXCHANGE):
    messaging.set_transport_defaults(control_exchange)


def init(conf):
    """Create the process-wide transport from ``[DEFAULT] transport_url``."""
    global TRANSPORT
    set_defaults()
    TRANSPORT = messaging.get_rpc_transport(
        conf, allowed_remote_exmods=ALLOWED_EXMODS
    )


def cleanup():
    global TRANSPORT
    if TRANSPORT is not None:
        TRANSPORT.cleanup()
        TRANSPORT = None


def _transport():
    if TRANSPORT is None:
        raise RuntimeError("cs2os_agent.common.rpc.init() was not called")
    return TRANSPORT


def get_client(target, version_cap=None):
    return messaging.get_rpc_client(
        _transport(),
        target,
        version_cap=version_cap,
        serializer=RequestContextSerializer(),
    )


def get_server(target, endpoints):
    return messaging.get_rpc_server(
        _transport(),
        target,
        endpoints,
        serializer=RequestContextSerializer(),
        access_policy=messaging.DefaultRPCAccessPolicy,
    )
