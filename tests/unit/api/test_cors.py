"""A browser client on another origin may ask for a microversion and read
the one it got (the CORS defaults of api/cors_defaults.py)."""

import webob
from oslo_middleware import cors

from cs2os_agent.api import app as api_app

ORIGIN = "https://dashboard.example.test"


def _app(config, conductor):
    config.register_opts(cors.CORS_OPTS, "cors")
    config.set_override("allowed_origin", [ORIGIN], group="cors")
    config.set_override("auth_strategy", "noauth", group="api")
    return api_app.build(config, conductor)


def test_preflight_allows_the_microversion_header(config, conductor):
    app = _app(config, conductor)
    req = webob.Request.blank("/v1/migrations", method="OPTIONS")
    req.headers["Origin"] = ORIGIN
    req.headers["Access-Control-Request-Method"] = "POST"
    req.headers["Access-Control-Request-Headers"] = \
        "openstack-api-version,idempotency-key,x-auth-token"
    resp = req.get_response(app)
    assert resp.status_int == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    for name in ("openstack-api-version", "idempotency-key",
                 "x-auth-token"):
        assert name in allowed


def test_an_answer_exposes_its_microversion(config, conductor):
    app = _app(config, conductor)
    req = webob.Request.blank("/v1/migrations")
    req.headers["Origin"] = ORIGIN
    req.headers["OpenStack-API-Version"] = "cs2os 1.5"
    resp = req.get_response(app)
    assert resp.status_int == 200, resp.text
    assert resp.headers["OpenStack-API-Version"] == "cs2os 1.5"
    exposed = resp.headers["Access-Control-Expose-Headers"].lower()
    assert "openstack-api-version" in exposed
    assert "x-openstack-request-id" in exposed


def test_an_operators_cors_settings_win(config, conductor):
    config.register_opts(cors.CORS_OPTS, "cors")
    config.set_override("expose_headers", ["X-Only-This"], group="cors")
    app = _app(config, conductor)
    req = webob.Request.blank("/v1/migrations")
    req.headers["Origin"] = ORIGIN
    resp = req.get_response(app)
    assert resp.headers["Access-Control-Expose-Headers"] == "X-Only-This"
