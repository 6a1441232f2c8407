"""Small request/response helpers shared by the API handlers."""

import webob
from oslo_serialization import jsonutils

from cs2os_agent.api import errors

CONTEXT_KEY = "cs2os.context"


def context(request):
    return request.environ[CONTEXT_KEY]


def json_body(request):
    """The request's JSON body; 415 or 400 with the reason otherwise."""
    if request.content_type != "application/json":
        raise errors.ApiError(
            415, "the request body must be application/json, not %s"
            % (request.content_type or "missing"),
            "cs2os.UnsupportedMediaType")
    try:
        return jsonutils.loads(request.body.decode("utf-8"))
    except ValueError as exc:
        raise errors.ApiError(
            400, "the request body is not valid JSON: %s" % exc,
            "cs2os.InvalidRequest") from None


def json_response(status, body):
    resp = webob.Response(status=status, content_type="application/json",
                          charset="utf-8")
    resp.body = jsonutils.dump_as_bytes(body)
    return resp
