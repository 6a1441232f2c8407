"""/healthcheck in cs2os-api's pipeline, in process; the real process
(and its 401s from keystonemiddleware) is in
tests/functional/test_healthcheck.py."""

import webob

from cs2os_agent.api import app as api_app
from cs2os_agent.api import policy


def _app(make_config, tmp_path, backends=True):
    disable = tmp_path / "healthcheck-off"
    text = "[api]\nauth_strategy = noauth\n"
    if backends:
        text += ("[healthcheck]\nbackends = disable_by_file\n"
                 "disable_by_file_path = %s\n" % disable)
    config = make_config(text)
    policy.init(config)
    return api_app.build(config, conductor_api=None), disable


def _get(app, path, method="GET", **headers):
    return webob.Request.blank(path, method=method,
                               headers=headers).get_response(app)


def test_ok_then_disabled_by_the_file(make_config, tmp_path):
    app, disable = _app(make_config, tmp_path)
    resp = _get(app, "/healthcheck")
    assert (resp.status_int, resp.text) == (200, "OK")
    assert resp.headers["X-OpenStack-Request-Id"].startswith("req-")
    assert _get(app, "/healthcheck", "HEAD").status_int == 204
    disable.write_text("")
    resp = _get(app, "/healthcheck")
    assert (resp.status_int, resp.text) == (503, "DISABLED BY FILE")
    resp = _get(app, "/healthcheck", Accept="application/json")
    assert resp.status_int == 503
    assert resp.json == {"detailed": False, "reasons": ["DISABLED BY FILE"]}


def test_without_backends_it_is_always_200(make_config, tmp_path):
    # oslo.middleware's default: no backend, so no reason to give either.
    app, _ = _app(make_config, tmp_path, backends=False)
    resp = _get(app, "/healthcheck")
    assert (resp.status_int, resp.text) == (200, "")


def test_other_methods_and_paths_go_on_to_the_api(make_config, tmp_path):
    app, _ = _app(make_config, tmp_path)
    for method, path in (("POST", "/healthcheck"), ("GET", "/healthcheck/"),
                         ("GET", "/v1/healthcheck")):
        resp = _get(app, path, method)
        # The API's own JSON errors (noauth here: no 401).
        assert resp.status_int in (404, 405), (method, path)
        assert resp.json["errors"][0]["code"] in (
            "cs2os.NotFound", "cs2os.MethodNotAllowed")
