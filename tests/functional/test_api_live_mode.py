"""API 1.15 (mode live, live_fallback) on a real cs2os-api process in
front of a real cs2os-conductor (RabbitMQ, its database): an older
version is refused, 1.15 crosses the bus (conductor RPC 1.10) and the
record keeps the mode and the fallback; the openstack CLI sends them.

The VM named does not exist in CloudStack: the migration fails at
validate, after the conductor recorded it, which is all this needs.
"""

import os
import subprocess
import sys

import pytest
import requests

from tools.testbed import api_process
from tools.testbed import harness

RUN_ID = harness.RUN_ID
HEADER = "OpenStack-API-Version"
OPENSTACK = os.path.join(os.path.dirname(sys.executable), "openstack")


@pytest.fixture(scope="module")
def api(workdir, services, conductor):
    proc = api_process.ApiProcess(workdir, "cs2os-live-%s-api" % RUN_ID,
                                  harness.TRANSPORT_URL,
                                  services["exchange"])
    proc.start()
    yield proc
    proc.stop()


def _at(version):
    return {HEADER: "cs2os %s" % version}


def test_live_needs_1_15_and_is_recorded(api):
    body = {"migration": {"source": "live-%s" % RUN_ID, "mode": "live",
                          "live_fallback": True}}
    resp = requests.post(api.url + "/v1/migrations", json=body,
                         headers=_at("1.14"), timeout=30)
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["detail"] == (
        "mode live needs API version 1.15 (OpenStack-API-Version: cs2os "
        "1.15); this request is version 1.14")
    resp = requests.post(api.url + "/v1/migrations", json=body,
                         headers=_at("1.15"), timeout=30)
    assert resp.status_code == 202, resp.text
    record = requests.get(resp.headers["Location"], headers=_at("1.15"),
                          timeout=30).json()["migration"]
    assert (record["mode"], record["live_fallback"]) == ("live", True)
    assert record["progress"]["steps"] == 10
    older = requests.get(resp.headers["Location"], headers=_at("1.14"),
                         timeout=30).json()["migration"]
    assert "live_fallback" not in older


def test_the_conductor_refuses_a_fallback_outside_live(api):
    # The schema says it first; the same words as the conductor's.
    body = {"migration": {"source": "live-%s" % RUN_ID, "mode": "warm",
                          "live_fallback": True}}
    resp = requests.post(api.url + "/v1/migrations", json=body,
                         headers=_at("1.15"), timeout=30)
    assert resp.status_code == 400
    assert "live_fallback applies to live migrations only (mode is warm)" \
        in resp.json()["errors"][0]["detail"]


def test_the_cli_imports_in_live_mode(api):
    source = "live-cli-%s" % RUN_ID
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    done = subprocess.run(
        [OPENSTACK, "--os-auth-type", "none", "--os-endpoint", api.url,
         "cs2os", "import", source, "--mode", "live", "--live-fallback",
         "-f", "json"], capture_output=True, text=True, timeout=120,
        env=env)
    assert done.returncode == 0, done.stderr
    listed = requests.get(api.url + "/v1/migrations?source=%s" % source,
                          headers=_at("1.15"), timeout=30).json()
    (record,) = listed["migrations"]
    assert (record["mode"], record["live_fallback"]) == ("live", True)
