"""Client mistakes in the raw request are 4xx naming the problem, never
5xx (api/wsgi_util.py, and the body size limit of api/app.py)."""

import io
import json

import pytest
import webob

from tests.unit.api.harness import DEEP
from tests.unit.api.harness import MID
from tests.unit.api.harness import call
from tests.unit.api.harness import error


def test_create_rejects_non_json(app, conductor):
    resp, data = call(app, "POST", "/v1/migrations", b"{source: 1")
    assert resp.status_int == 400
    assert "not valid JSON" in error(data)["detail"]
    resp, data = call(app, "POST", "/v1/migrations", b"source=1",
                      content_type="application/x-www-form-urlencoded")
    assert resp.status_int == 415
    assert "application/x-www-form-urlencoded" in error(data)["detail"]
    assert conductor.calls == []


@pytest.mark.parametrize("method,path,body,content_type,status,detail", [
    ("POST", "/v1/migrations", DEEP, "application/json", 400,
     "the request body nests arrays or objects deeper than 32 levels"),
    ("POST", "/v1/migrations/%s/action" % MID, b'{"a":' * 20000,
     "application/json", 400,
     "the request body nests arrays or objects deeper than 32 levels"),
    # 32 levels parse; only the schema has something to say.
    ("POST", "/v1/migrations", b"[" * 32 + b"]" * 32, "application/json",
     400, "body: [[[[[[[["),
    ("GET", "/v1/migrations?host=%C3", None, None, 400,
     "the query string is not UTF-8 once percent-decoded: host=%C3"),
    ("GET", "/v1/migrations?%C3=1", None, None, 400,
     "the query string is not UTF-8 once percent-decoded: %C3=1"),
    ("GET", "/v1/migrations/%FF", None, None, 400,
     "the path is not UTF-8 once percent-decoded: /v1/migrations/%FF"),
    ("GET", "/v1/migrations%0A", None, None, 404,
     "no resource at /v1/migrations\n"),
    ("POST", "/v1/migrations", b'{"migration": {"source": "\xff"}}',
     "application/json", 400, "the request body is not UTF-8: "),
    ("POST", "/v1/migrations", b'{"migration": {"source": "\\ud800"}}',
     "application/json", 400, "the request body has a string that is not "
     "Unicode text (a lone UTF-16 surrogate '\\ud800')"),
    ("POST", "/v1/migrations", b'{"migration": NaN}', "application/json",
     400, "the request body is not valid JSON: NaN is not a JSON value"),
    ("POST", "/v1/migrations", b'[-Infinity]', "application/json", 400,
     "the request body is not valid JSON: -Infinity is not a JSON value"),
    ("POST", "/v1/migrations", b"[" + b"9" * 5000 + b"]", "application/json",
     400, "the request body is not valid JSON: a number has more than 4300 "
     "digits"),
    ("POST", "/v1/migrations", b"", "application/json", 400,
     "the request body is not valid JSON"),
    ("POST", "/v1/migrations", b"{}", "application/json; charset=latin-1",
     415, "the request body must be UTF-8 JSON, not charset latin-1"),
    ("POST", "/v1/migrations", b"{}", "text/plain", 415,
     "the request body must be application/json, not text/plain"),
    ("GET", "/v1/migrations?limit=1_0", None, None, 400,
     "query parameter limit must be an integer, not '1_0'"),
    ("GET", "/v1/migrations?limit=%EF%BC%91", None, None, 400,
     "query parameter limit must be an integer, not '\uff11'"),
    ("GET", "/v1/migrations?limit=+5", None, None, 400,
     "query parameter limit must be an integer, not ' 5'"),
    ("GET", "/v1/migrations?limit=" + "9" * 19, None, None, 400,
     "query parameter limit has more than 18 digits"),
    ("GET", "/v1/migrations?source=%00", None, None, 400,
     "query parameter source: '\\x00' must be a non-blank string"),
    ("GET", "/v1/migrations?" + "&".join(["state=failed"] * 101), None,
     None, 400, "the query string has more than 100 parameters"),
])
def test_client_mistakes_are_4xx_naming_the_problem(
        app, conductor, method, path, body, content_type, status, detail):
    resp, data = call(app, method, path, body, content_type=content_type)
    assert resp.status_int == status
    assert error(data)["detail"].startswith(detail)
    assert error(data)["request_id"].startswith("req-")
    assert conductor.calls == []


@pytest.mark.parametrize("source", [
    # Brackets, quotes and backslashes inside strings are no nesting.
    "[" * 200, '"[' * 100, "\\[" * 100, "}]" * 100 + "\\",
])
def test_brackets_in_strings_do_not_count_as_depth(app, conductor, source):
    resp, _ = call(app, "POST", "/v1/migrations",
                   {"migration": {"source": source}})
    assert resp.status_int == 202
    assert conductor.calls[0][2] == {"arg": {"source": source}}


def test_media_types_are_case_insensitive(app, conductor):
    resp, _ = call(app, "POST", "/v1/migrations",
                   b'{"migration": {"source": "a"}}',
                   content_type="Application/JSON; Charset=UTF-8")
    assert resp.status_int == 202


def _raw_request(path, body, **environ):
    req = webob.Request.blank(path, method="POST",
                              base_url="http://api.test:9877")
    req.environ.update(CONTENT_TYPE="application/json",
                       **{"wsgi.input": io.BytesIO(body)}, **environ)
    return req


def test_too_large_bodies_are_json_413s(app, conductor):
    too_large = b" " * 200000
    # Announced in Content-Length: oslo's limiter, our JSON.
    req = _raw_request("/v1/migrations", too_large,
                       CONTENT_LENGTH=str(len(too_large)))
    resp = req.get_response(app)
    assert resp.status_int == 413
    assert error(json.loads(resp.body)) | {"request_id": None} == {
        "status": 413, "code": "cs2os.RequestEntityTooLarge",
        "title": "Request Entity Too Large", "request_id": None,
        "detail": "the request body is larger than 114688 bytes"}
    # Not announced (chunked): found out while it is read.
    req = _raw_request("/v1/migrations", too_large,
                       **{"wsgi.input_terminated": True})
    resp = req.get_response(app)
    assert resp.status_int == 413
    assert error(json.loads(resp.body))["detail"] == \
        "the request body is larger than 114688 bytes"
    assert conductor.calls == []


def test_a_body_shorter_than_its_content_length_is_a_400(app, conductor):
    # The client went away mid-body: WebOb's DisconnectionError was a 500.
    req = _raw_request("/v1/migrations", b"{}", CONTENT_LENGTH="10")
    resp = req.get_response(app)
    assert resp.status_int == 400
    assert error(json.loads(resp.body))["detail"].startswith(
        "the request body ended early: The client disconnected")
    assert conductor.calls == []
