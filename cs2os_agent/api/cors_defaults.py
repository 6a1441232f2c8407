"""The CORS defaults of cs2os-api: what a browser client may send and read.

oslo.middleware's own defaults expose no header and allow only the simple
ones, so a dashboard talking to cs2os-api from another origin could neither
ask for a microversion nor read which one it got.  Nova and Placement set
their defaults the same way; an operator's ``[cors]`` settings still win.
"""

from oslo_middleware import cors

from cs2os_agent.api import schemas
from cs2os_agent.api import versioning

# Sent by clients: the token, the microversion, the idempotency key.
ALLOW_HEADERS = ["X-Auth-Token", "X-OpenStack-Request-ID",
                 versioning.HEADER, schemas.IDEMPOTENCY_KEY_HEADER]
# Read by clients: the request id to quote in a bug report, and the
# microversion the answer was built for.
EXPOSE_HEADERS = ["X-OpenStack-Request-ID", versioning.HEADER]
ALLOW_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def set_defaults():
    cors.set_defaults(allow_headers=ALLOW_HEADERS,
                      expose_headers=EXPOSE_HEADERS,
                      allow_methods=ALLOW_METHODS)
