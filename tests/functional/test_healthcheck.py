"""GET /healthcheck of a real cs2os-api process, as a load balancer asks.

The API checks Keystone tokens here (auth_strategy = keystone): the
health check answers without one, everything else still wants one.  No
request below carries a token, so none reaches Keystone (auth_token
rejects a request without a token by itself).
"""

import os

import pytest
import requests

from tools.testbed import api_process
from tools.testbed import harness

RUN_ID = harness.RUN_ID


@pytest.fixture(scope="module")
def disable_file(workdir):
    path = os.path.join(workdir, "healthcheck-disable-%s" % RUN_ID)
    yield path
    if os.path.exists(path):
        os.unlink(path)


@pytest.fixture(scope="module")
def api(workdir, services, disable_file):
    proc = api_process.ApiProcess(
        workdir, "cs2os-api-health-%s" % RUN_ID, harness.TRANSPORT_URL,
        services["exchange"], auth_strategy="keystone",
        sections={
            # Only named in the 401's WWW-Authenticate; never contacted.
            "keystone_authtoken": {
                "www_authenticate_uri": "http://127.0.0.1:9/identity"},
            "healthcheck": {"backends": "disable_by_file",
                            "disable_by_file_path": disable_file},
        })
    proc.start()
    yield proc
    proc.stop()


def test_healthcheck_answers_ok_without_a_token(api):
    resp = requests.get(api.url + "/healthcheck", timeout=10)
    assert (resp.status_code, resp.text) == (200, "OK")
    assert resp.headers["Content-Type"].startswith("text/plain")
    # It went through the pipeline's request id like any request.
    assert resp.headers["X-OpenStack-Request-Id"].startswith("req-")
    head = requests.head(api.url + "/healthcheck", timeout=10)
    assert head.status_code == 204


def test_the_disable_file_turns_it_to_503_and_back(api, disable_file):
    with open(disable_file, "w"):
        pass
    try:
        resp = requests.get(api.url + "/healthcheck", timeout=10)
        assert resp.status_code == 503
        assert resp.text == "DISABLED BY FILE"
        assert requests.head(api.url + "/healthcheck",
                             timeout=10).status_code == 503
    finally:
        os.unlink(disable_file)
    resp = requests.get(api.url + "/healthcheck", timeout=10)
    assert (resp.status_code, resp.text) == (200, "OK")


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/migrations"),
    ("GET", "/v1/"),
    ("GET", "/v1/migrations/5b0c1f9e-4a41-4c1e-9d59-1d2c1a1e2f30"),
    ("POST", "/v1/migrations"),
    # Only GET and HEAD of /healthcheck itself are open.
    ("POST", "/healthcheck"),
    ("GET", "/healthcheck/"),
    ("GET", "/healthcheckx"),
    ("GET", "/v1/healthcheck"),
])
def test_every_other_request_still_needs_a_token(api, method, path):
    resp = requests.request(method, api.url + path, json={}, timeout=10)
    assert resp.status_code == 401, (method, path, resp.text)
    assert resp.headers["WWW-Authenticate"] == \
        'Keystone uri="http://127.0.0.1:9/identity"'


def test_the_version_document_stays_open(api):
    # Unchanged by the health check: it was public before.
    resp = requests.get(api.url + "/", timeout=10)
    assert resp.status_code == 200
    assert resp.json()["versions"][0]["id"] == "v1"
