"""cs2os-api as its own process, in front of a real cs2os-conductor.

HTTP on 127.0.0.1 -> cs2os-api -> RabbitMQ -> cs2os-conductor -> its
database and the CloudStack API stand-in: every answer here crossed the
real bus.  Keystone tokens and the openstack CLI against this API run in
tests/e2e (a real Keystone lives in the minicloud).
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import requests

from tools.testbed import api_process
from tools.testbed import harness

RUN_ID = harness.RUN_ID
# Requests using fields added after API 1.0 (test_api_microversions.py
# covers the versions themselves).
LATEST = {"OpenStack-API-Version": "cs2os latest"}


@pytest.fixture(scope="module")
def api(workdir, services, conductor):
    proc = api_process.ApiProcess(
        workdir, "cs2os-api-%s" % RUN_ID, harness.TRANSPORT_URL,
        services["exchange"])
    proc.start()
    yield proc
    proc.stop()


def _create(api, source):
    resp = requests.post(api.url + "/v1/migrations",
                         json={"migration": {"source": source}}, timeout=30)
    assert resp.status_code == 202, resp.text
    return resp


def _wait_state(api, migration_id, states):
    found = {}

    def reached():
        resp = requests.get(api.url + "/v1/migrations/" + migration_id,
                            timeout=30)
        found.update(resp.json()["migration"])
        return found["state"] in states

    harness.wait_for(reached, 60, interval=0.3)
    return found


def test_versions(api):
    resp = requests.get(api.url + "/", timeout=10)
    assert resp.json()["versions"][0]["links"][0]["href"] == \
        api.url + "/v1/"


def test_a_migration_through_the_api_reaches_the_conductor(api, cloud):
    name = "missing-%s" % RUN_ID
    resp = _create(api, name)
    created = resp.json()["migration"]
    assert resp.headers["Location"] == \
        api.url + "/v1/migrations/" + created["id"]
    assert (created["state"], created["source_ref"]) == ("queued", name)
    # The noauth identity travelled in the RPC context to the record.
    assert (created["user_id"], created["project_id"]) == \
        ("noauth-admin", "noauth")
    # The API's request id is the one the conductor recorded.
    assert created["request_id"] == resp.headers["X-OpenStack-Request-Id"]
    failed = _wait_state(api, created["id"], ("failed",))
    assert "CloudStack has no VM with id or name %s" % name in \
        failed["error"]
    assert failed["events"], failed
    assert any(c[1] == "listVirtualMachines" for c in cloud.calls)


def test_list_filters_and_pages(api):
    ids = [_create(api, "page-%s" % RUN_ID).json()["migration"]["id"]
           for _ in range(3)]
    other = _create(api, "other-%s" % RUN_ID).json()["migration"]["id"]
    url = api.url + "/v1/migrations?limit=2&source=page-%s" % RUN_ID
    seen = []
    while url:
        body = requests.get(url, timeout=30).json()
        assert len(body["migrations"]) <= 2
        seen += [m["id"] for m in body["migrations"]]
        links = body.get("migrations_links", [])
        url = links[0]["href"] if links else None
    # Newest first, every one once, the other VM's not at all.
    assert seen == ids[::-1]
    assert other not in seen


def test_the_target_project_crosses_the_bus(api):
    # An admin (noauth): its project field reaches the conductor, and the
    # list's project filter is the conductor database's
    # target_project_id.
    resp = requests.post(api.url + "/v1/migrations", json={"migration": {
        "source": "proj-%s" % RUN_ID, "project": " tenant-%s " % RUN_ID}},
        headers=LATEST, timeout=30)
    assert resp.status_code == 202, resp.text
    created = resp.json()["migration"]
    # Resolved by the first step; the creator's project stays.
    assert created["project_id"] == "noauth"
    assert "target_project_id" in created
    listed = requests.get(api.url + "/v1/migrations?project=nobody-%s"
                          % RUN_ID, headers=LATEST, timeout=30)
    assert listed.status_code == 200, listed.text
    assert listed.json()["migrations"] == []
    every = requests.get(api.url + "/v1/migrations?source=proj-%s" % RUN_ID,
                         timeout=30).json()["migrations"]
    assert [m["id"] for m in every] == [created["id"]]
    # What JSON Schema cannot say, the conductor does, naming the field.
    resp = requests.post(api.url + "/v1/migrations", json={"migration": {
        "source": "proj-%s" % RUN_ID, "project": "a\u200bb"}},
        headers=LATEST, timeout=30)
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["code"] == "cs2os.Invalid"
    assert "project" in resp.json()["errors"][0]["detail"]


def test_actions_obey_the_states(api):
    created = _create(api, "gone-%s" % RUN_ID).json()["migration"]
    _wait_state(api, created["id"], ("failed",))
    action = api.url + "/v1/migrations/%s/action" % created["id"]
    resp = requests.post(action, json={"cancel": {}}, timeout=30)
    assert resp.status_code == 409
    assert resp.json()["errors"][0]["detail"] == \
        "Migration %s is failed: cannot cancel" % created["id"]
    resp = requests.post(action, json={"retry": {}}, timeout=30)
    assert resp.status_code == 202, resp.text
    assert _wait_state(api, created["id"], ("failed",))["events"][-1]


def test_client_mistakes_are_4xx_with_the_reason(api):
    resp = requests.post(api.url + "/v1/migrations",
                         json={"migration": {"source": "x", "mode": "hot"}},
                         timeout=30)
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["detail"] == \
        "body/migration/mode: 'hot' is not one of ['cold', 'warm', 'live']"
    resp = requests.post(api.url + "/v1/migrations",
                         json={"migration": {"source": "x",
                                             "cutover": "manual"}},
                         headers=LATEST, timeout=30)
    # A cross-field rule of the schema (the conductor has it too): a cold
    # migration has no cutover.
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["detail"] == (
        "body/migration: cutover and cutover_method apply to warm and "
        "live migrations only (mode is cold)")
    resp = requests.get(api.url + "/v1/migrations/"
                        "9d3c7c84-0a57-4f38-a0fb-1a5bb0f0e5a1", timeout=30)
    assert resp.status_code == 404
    assert resp.json()["errors"][0]["code"] == "cs2os.MigrationNotFound"


def _raw(api, request_line, body=b"", headers=()):
    """Send bytes as they are (requests would quote or refuse them)."""
    head = [request_line, "Host: 127.0.0.1", "Connection: close",
            "Content-Length: %d" % len(body), *headers]
    with socket.create_connection(("127.0.0.1", api.port), 30) as conn:
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
                     + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_the_known_500s_are_400s_naming_the_problem(api):
    # Both were 500s: RecursionError in the json module, and
    # UnicodeDecodeError inside WebOb.
    status, body = _raw(api, "POST /v1/migrations HTTP/1.1",
                        b"[" * 100000, ["Content-Type: application/json"])
    assert status == 400
    assert body["errors"][0]["detail"] == \
        "the request body nests arrays or objects deeper than 32 levels"
    status, body = _raw(api, "GET /v1/migrations?host=%C3 HTTP/1.1")
    assert status == 400
    assert body["errors"][0]["detail"] == \
        "the query string is not UTF-8 once percent-decoded: host=%C3"
    # Their neighbours: a path that is not UTF-8, raw bytes in the query.
    status, body = _raw(api, "GET /v1/migrations/%FF HTTP/1.1")
    assert status == 400
    assert body["errors"][0]["detail"] == \
        "the path is not UTF-8 once percent-decoded: /v1/migrations/%FF"
    status, body = _raw(api, "GET /v1/migrations?source=\xe9 HTTP/1.1")
    assert status == 400
    assert body["errors"][0]["detail"] == \
        "the query string is not UTF-8 once percent-decoded: source=%E9"
    # And the API still answers: nothing above killed a worker.
    assert requests.get(api.url + "/v1/migrations?limit=1",
                        timeout=30).status_code == 200


def test_a_repeated_idempotency_key_gets_the_same_migration(api):
    key = dict(LATEST, **{"Idempotency-Key": "fuzz-%s-once" % RUN_ID})
    body = {"migration": {"source": "idem-%s" % RUN_ID}}
    first = requests.post(api.url + "/v1/migrations", json=body,
                          headers=key, timeout=30)
    again = requests.post(api.url + "/v1/migrations", json=body,
                          headers=key, timeout=30)
    assert (first.status_code, again.status_code) == (202, 202), again.text
    assert again.json()["migration"]["id"] == \
        first.json()["migration"]["id"]
    listed = requests.get(api.url + "/v1/migrations?source=idem-%s" % RUN_ID,
                          timeout=30).json()["migrations"]
    assert [m["id"] for m in listed] == [first.json()["migration"]["id"]]
    resp = requests.post(api.url + "/v1/migrations", json=body,
                         headers=dict(LATEST,
                                      **{"Idempotency-Key": "caf\xe9"}),
                         timeout=30)
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["detail"].startswith(
        "header Idempotency-Key: 'caf\xe9' must be 1-255 printable ASCII")


def test_no_conductor_is_503_not_a_hang(workdir, services):
    # An API on an exchange no conductor listens on.
    proc = api_process.ApiProcess(
        workdir, "cs2os-api-lonely-%s" % RUN_ID, harness.TRANSPORT_URL,
        "cs2os-nobody-%s" % RUN_ID, conductor_timeout=2)
    proc.start()
    try:
        resp = requests.get(proc.url + "/v1/migrations", timeout=30)
        assert resp.status_code == 503
        assert resp.json()["errors"][0]["detail"].startswith(
            "cs2os-conductor did not answer within 2 s")
    finally:
        proc.stop()


def test_the_wsgi_module_serves_the_same_api(workdir, services, conductor):
    # What uwsgi/mod_wsgi load: config from $CS2OS_CONFIG_FILES, no argv.
    proc = api_process.ApiProcess(
        workdir, "cs2os-api-wsgi-%s" % RUN_ID, harness.TRANSPORT_URL,
        services["exchange"])
    probe = ("import webob; from cs2os_agent.wsgi import api; "
             "r = webob.Request.blank('/v1/migrations?limit=1')"
             ".get_response(api.application); print(r.status_int, r.text)")
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True,
        env=dict(os.environ, CS2OS_CONFIG_FILES=proc.conf_file),
        timeout=120, check=False)
    status, _, body = done.stdout.partition(" ")
    assert status == "200", done.stderr[-2000:]
    assert "migrations" in json.loads(body)
