"""JSON error bodies in the OpenStack API-SIG format.

``{"errors": [{"status": 404, "code": "cs2os.MigrationNotFound",
"title": "Not Found", "detail": "...", "request_id": "req-..."}]}``: the
detail names the problem, the code is stable for scripts to match on.
"""

import http

import oslo_messaging as messaging
import webob
import webob.exc
from oslo_log import log as logging
from oslo_serialization import jsonutils

from cs2os_agent.common import exception

LOG = logging.getLogger(__name__)


class ApiError(Exception):
    """A client mistake found by the API itself (bad path, body, query)."""

    def __init__(self, status, detail, code=None, headers=None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or "cs2os.%s" % http.HTTPStatus(status).phrase \
            .replace(" ", "")
        self.headers = headers or {}


def response(request, status, detail, code, headers=None):
    title = http.HTTPStatus(status).phrase
    body = {"errors": [{
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
        "request_id": request.environ.get("openstack.request_id"),
    }]}
    resp = webob.Response(status=status, content_type="application/json",
                          charset="utf-8")
    resp.body = jsonutils.dump_as_bytes(body)
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def _where(request):
    # The raw PATH_INFO: request.path decodes it and may itself raise
    # (a path that is not UTF-8), here of all places.
    return "%s %r" % (request.environ.get("REQUEST_METHOD"),
                      request.environ.get("PATH_INFO", ""))


def from_exception(request, exc, conductor_timeout=None):
    """The error response for ``exc``; unexpected ones are logged."""
    if isinstance(exc, ApiError):
        return response(request, exc.status, exc.detail, exc.code,
                        exc.headers)
    if isinstance(exc, exception.Cs2osException):
        # Typed errors keep their type across RPC (common/rpc.py), so the
        # conductor's verdict reaches the caller with its own status.
        status = exc.code if exc.code in _KNOWN_STATUSES else 500
        if status >= 500:
            LOG.warning("%s: %s", _where(request), exc)
        return response(request, status, exception.describe(exc),
                        "cs2os.%s" % exception.name_of(exc))
    if (isinstance(exc, messaging.RemoteError)
            and exc.exc_type in DATABASE_UNAVAILABLE):
        # The conductor's database is down or stayed deadlocked through
        # oslo.db's retries: nothing was decided, the caller may retry.
        LOG.error("%s: the conductor's database failed: %s: %s",
                  _where(request), exc.exc_type, exc.value)
        return response(request, 503, "cs2os-conductor could not reach its "
                        "database (%s); retry later" % exc.exc_type,
                        "cs2os.DatabaseUnavailable", {"Retry-After": "5"})
    if isinstance(exc, messaging.MessagingTimeout):
        err = exception.ConductorUnavailable(timeout=conductor_timeout)
        LOG.error("%s: %s", _where(request), err)
        return response(request, 503, str(err), "cs2os.ConductorUnavailable")
    if isinstance(exc, webob.exc.HTTPException):
        return response(request, exc.code, exc.explanation,
                        "cs2os.%s" % exc.title.replace(" ", ""))
    LOG.exception("%s failed unexpectedly", _where(request))
    return response(request, 500,
                    "Unexpected error; the cs2os-api log has the details "
                    "(request %s)" % request.environ.get(
                        "openstack.request_id"),
                    "cs2os.InternalError")


_KNOWN_STATUSES = {s.value for s in http.HTTPStatus}
# The conductor's database failures as their names cross RPC (the API
# does not import oslo.db: its install does not need it).  oslo.db's
# "not there" and "still deadlocked after the retries"; and the DB-API's
# OperationalError, which is what a pool checkout against a stopped
# PostgreSQL raises unwrapped (tests/functional/test_api_database_down.py).
DATABASE_UNAVAILABLE = ("DBConnectionError", "DBDeadlock",
                        "OperationalError")
