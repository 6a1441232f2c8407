"""The cs2os-api WSGI application and its middleware pipeline.

Built in code rather than from an api-paste.ini, as Placement does: the
pipeline has no optional pieces an operator would reorder, and one place
that builds it is easier to test.  From the outside in:

    http_proxy_to_wsgi -> request_id -> /healthcheck (oslo.middleware,
    for load balancers; no token) -> cors -> body size limit
    -> auth (keystonemiddleware auth_token, or noauth; the version and
       OpenAPI documents bypass it) -> router
"""

import re

import webob
import webob.dec
import webob.exc
from keystonemiddleware import auth_token
from oslo_context import context as oslo_context
from oslo_log import log as logging
from oslo_middleware import cors
from oslo_middleware import healthcheck
from oslo_middleware import http_proxy_to_wsgi
from oslo_middleware import request_id
from oslo_middleware import sizelimit

from cs2os_agent.api import cors_defaults
from cs2os_agent.api import errors
from cs2os_agent.api import migrations
from cs2os_agent.api import openapi
from cs2os_agent.api import plans
from cs2os_agent.api import versioning
from cs2os_agent.api import wsgi_util
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import microversions

LOG = logging.getLogger(__name__)

# As Nova's: "version" is the maximum microversion (keystoneauth's
# discovery reads it), "max_version" says the same as Placement's does.
VERSION = {"id": "v1", "status": "CURRENT",
           "min_version": str(microversions.MIN_VERSION),
           "version": str(microversions.MAX_VERSION),
           "max_version": str(microversions.MAX_VERSION)}
# The version documents answer whatever version a client asks for: a
# client reads them to find out which versions it may ask for.
UNVERSIONED = ("", "/", "/v1", "/v1/", openapi.PATH)


class Router:
    """Method + path regex -> handler; JSON 404/405 for anything else."""

    def __init__(self, conductor_api, conf):
        controller = migrations.MigrationsController(
            conductor_api, conf.api.max_limit)
        plan = plans.PlansController(conductor_api)
        self.conductor_timeout = conf.api.conductor_timeout
        uuid = r"(?P<migration_id>[^/]+)"
        plan_id = r"(?P<plan_id>[^/]+)"
        self.routes = [
            (re.compile(p), handlers) for p, handlers in (
                (r"/?", {"GET": self.versions}),
                (r"/v1/?", {"GET": self.version}),
                (re.escape(openapi.PATH), {"GET": self.openapi}),
                (r"/v1/migrations/?", {"GET": controller.index,
                                       "POST": controller.create}),
                (r"/v1/migrations/%s/?" % uuid, {"GET": controller.show}),
                (r"/v1/migrations/%s/action/?" % uuid,
                 {"POST": controller.action}),
                (r"/v1/plans/?", {"GET": plan.index, "POST": plan.create}),
                (r"/v1/plans/%s/?" % plan_id, {"GET": plan.show,
                                               "DELETE": plan.delete}),
                (r"/v1/plans/%s/action/?" % plan_id, {"POST": plan.action}),
            )
        ]

    @webob.dec.wsgify
    def __call__(self, request):
        try:
            if request.environ.get("PATH_INFO", "") not in UNVERSIONED:
                versioning.negotiate(request)
            resp = self._dispatch(request)
        except Exception as exc:  # noqa: BLE001 - every error becomes JSON
            resp = errors.from_exception(request, exc,
                                         self.conductor_timeout)
        return versioning.stamp(request, resp)

    def _dispatch(self, request):
        path = wsgi_util.path_info(request)
        for pattern, handlers in self.routes:
            # fullmatch: "$" would also match before a final "\n" (%0A).
            match = pattern.fullmatch(path)
            if not match:
                continue
            # A route newer than the request's version is not there (404).
            versioning.require_route(request, path)
            handler = handlers.get(request.method)
            if handler is None:
                allowed = ", ".join(sorted(handlers))
                raise errors.ApiError(
                    405, "%s is not allowed on %s; allowed: %s"
                    % (request.method, path, allowed),
                    "cs2os.MethodNotAllowed", headers={"Allow": allowed})
            return handler(request, **match.groupdict())
        raise errors.ApiError(404, "no resource at %s" % path,
                              "cs2os.NotFound")

    def versions(self, request):
        return wsgi_util.json_response(200, {"versions": [
            dict(VERSION, links=[{"rel": "self",
                                  "href": request.application_url + "/v1/"}])
        ]})

    def version(self, request):
        return wsgi_util.json_response(200, {"version": dict(
            VERSION, links=[{"rel": "self",
                             "href": request.application_url + "/v1/"}])})

    def openapi(self, request):
        return wsgi_util.json_response(
            200, openapi.document(request.application_url))


class ContextMiddleware:
    """Puts the caller's RequestContext (from auth_token's headers) in the
    environ; it travels with every RPC call to the conductor."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_IDENTITY_STATUS", "Confirmed") != "Confirmed":
            # auth_token with delay_auth_decision let an invalid token in.
            req = webob.Request(environ)
            return errors.response(req, 401, "authentication required",
                                   "cs2os.Unauthorized")(environ,
                                                         start_response)
        environ[wsgi_util.CONTEXT_KEY] = \
            cs2os_context.RequestContext.from_environ(environ)
        return self.app(environ, start_response)


class NoAuthMiddleware:
    """Every caller is an admin: [api] auth_strategy = noauth (tests)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        environ.setdefault("HTTP_X_USER_ID", "noauth-admin")
        environ.setdefault("HTTP_X_PROJECT_ID", "noauth")
        environ["HTTP_X_ROLES"] = "admin"
        environ["HTTP_X_IDENTITY_STATUS"] = "Confirmed"
        return self.app(environ, start_response)


class PublicBypassAuth:
    """Two documents answer without a token.

    The version document, as every OpenStack API's root does, so clients
    can discover /v1 before they log in; and the OpenAPI document of /v1,
    for the same reason: it describes the API's shape only (the same for
    every deployment, built from the code, the caller's own URL as its
    server), no data and nothing about the caller, and tools read it
    before they have a token.  Everything else goes through auth.
    """

    PATHS = ("", "/", openapi.PATH)

    def __init__(self, authed, open_app):
        self.authed = authed
        self.open_app = open_app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "") in self.PATHS:
            environ[wsgi_util.CONTEXT_KEY] = oslo_context.RequestContext()
            return self.open_app(environ, start_response)
        return self.authed(environ, start_response)


class HealthcheckPath:
    """GET or HEAD /healthcheck answers through oslo.middleware's
    Healthcheck, before any authentication, as Nova's and Glance's do: a
    load balancer has no token.  200 normally ("OK" from each backend);
    503 once a backend says no, e.g. ``[healthcheck] backends =
    disable_by_file`` while the file ``disable_by_file_path`` exists (an
    operator draining this node).

    Every other path and method goes on to the pipeline, and so does
    /healthcheck itself when Healthcheck ignores the request
    (``allowed_source_ranges``, ``ignore_proxied_requests``): then it
    needs a token like the rest.
    """

    PATH = "/healthcheck"

    def __init__(self, app, conf):
        self.app = app
        self.healthcheck = healthcheck.Healthcheck(app, conf)

    def __call__(self, environ, start_response):
        if (environ.get("PATH_INFO", "") == self.PATH
                and environ.get("REQUEST_METHOD") in ("GET", "HEAD")):
            return self.healthcheck(environ, start_response)
        return self.app(environ, start_response)


class BodySizeLimit(sizelimit.RequestBodySizeLimiter):
    """oslo.middleware's body size limit with an API-SIG JSON 413 (its own
    is HTML or plain text, and names the limit as a literal "%s")."""

    @webob.dec.wsgify
    def __call__(self, req):
        max_size = self._conf_get("max_request_body_size")
        req.environ[wsgi_util.MAX_BODY_KEY] = max_size
        try:
            return super().__call__(req)
        except webob.exc.HTTPRequestEntityTooLarge:
            return errors.response(
                req, 413, "the request body is larger than %d bytes"
                % max_size, "cs2os.RequestEntityTooLarge")


def build(conf, conductor_api):
    """The whole pipeline; ``conductor_api`` is a ConductorAPI."""
    router = Router(conductor_api, conf)
    app = ContextMiddleware(router)
    if conf.api.auth_strategy == "keystone":
        app = auth_token.AuthProtocol(app, {"oslo_config_config": conf})
    else:
        LOG.warning("cs2os-api runs with auth_strategy = noauth: every "
                    "caller is an admin")
        app = NoAuthMiddleware(app)
    app = PublicBypassAuth(app, router)
    app = BodySizeLimit(app, conf)
    cors_defaults.set_defaults()
    app = cors.CORS(app, conf)
    app = HealthcheckPath(app, conf)
    app = request_id.RequestId(app)
    app = http_proxy_to_wsgi.HTTPProxyToWSGI(app, conf)
    return app
