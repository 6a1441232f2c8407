"""Microversions on a real cs2os-api process, in front of a real
cs2os-conductor (RabbitMQ, its database, the CloudStack stand-in), and
the openstack CLI negotiating with it.

A second cs2os-api, the same code with its version table cut after 1.5
(tests/functional/older_api.py), stands for a server older than the
client: the CLI must settle on 1.5 with it, and refuse, naming both
versions, a command that needs more.
"""

import os
import subprocess
import sys

import pytest
import requests

from cs2os_agent.common import microversions
from tools.testbed import api_process
from tools.testbed import harness

RUN_ID = harness.RUN_ID
HEADER = "OpenStack-API-Version"
MAX = str(microversions.MAX_VERSION)
OPENSTACK = os.path.join(os.path.dirname(sys.executable), "openstack")


class OlderApi(api_process.ApiProcess):
    module = "tests.functional.older_api"


@pytest.fixture(scope="module")
def api(workdir, services, conductor):
    proc = api_process.ApiProcess(workdir, "cs2os-mv-%s-api" % RUN_ID,
                                  harness.TRANSPORT_URL,
                                  services["exchange"])
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def older_api(workdir, services, conductor):
    proc = OlderApi(workdir, "cs2os-mv-%s-api-1.5" % RUN_ID,
                    harness.TRANSPORT_URL, services["exchange"])
    proc.env["CS2OS_TEST_API_MAX"] = "1.5"
    proc.start()
    yield proc
    proc.stop()


def _at(version):
    return {HEADER: "cs2os %s" % version}


def test_the_version_document_lists_min_and_max(api):
    for path, key in (("/", "versions"), ("/v1/", "version")):
        resp = requests.get(api.url + path, timeout=10)
        assert resp.status_code == 200
        doc = resp.json()[key]
        doc = doc[0] if key == "versions" else doc
        assert (doc["id"], doc["status"], doc["min_version"],
                doc["max_version"], doc["version"]) == (
            "v1", "CURRENT", "1.0", MAX, MAX)
        assert doc["links"] == [{"rel": "self", "href": api.url + "/v1/"}]


def test_no_header_is_1_0_and_every_answer_says_its_version(api):
    resp = requests.get(api.url + "/v1/migrations?limit=1", timeout=30)
    assert resp.status_code == 200
    assert resp.headers[HEADER] == "cs2os 1.0"
    assert resp.headers["Vary"] == HEADER
    resp = requests.get(api.url + "/v1/migrations?limit=1",
                        headers={HEADER: "cs2os latest"}, timeout=30)
    assert resp.headers[HEADER] == "cs2os %s" % MAX


def test_an_unsupported_version_is_a_406_naming_min_and_max(api):
    resp = requests.get(api.url + "/v1/migrations", headers=_at("1.999"),
                        timeout=30)
    assert resp.status_code == 406
    assert resp.json()["errors"][0]["detail"] == (
        "version 1.999 is not supported: this API serves cs2os 1.0 to %s"
        % MAX)


@pytest.mark.parametrize("value", [
    "cs2os", "cs2os 1", "cs2os 1.", "cs2os 01.0x", "cs2os \u00e91.1",
    "cs2os 1.1, cs2os 1.2", "cs2os " + "9" * 5000, "cs2os 1.0 1.1",
    "cs2os -1.0"])
def test_a_malformed_header_is_a_400_not_a_5xx(api, value):
    resp = requests.get(api.url + "/v1/migrations",
                        headers={HEADER: value.encode()}, timeout=30)
    assert resp.status_code in (400, 406), resp.text
    assert "OpenStack-API-Version" in resp.json()["errors"][0]["detail"] \
        or resp.status_code == 406


def test_an_older_version_is_refused_what_it_lacks(api):
    body = {"migration": {"source": "mv-%s" % RUN_ID, "volume_type": "ssd"}}
    resp = requests.post(api.url + "/v1/migrations", json=body,
                         headers=_at("1.10"), timeout=30)
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["detail"] == (
        "field volume_type needs API version 1.11 (OpenStack-API-Version: "
        "cs2os 1.11); this request is version 1.10")
    resp = requests.get(api.url + "/v1/plans", headers=_at("1.9"),
                        timeout=30)
    assert resp.status_code == 404
    assert "/v1/plans needs API version 1.10" in \
        resp.json()["errors"][0]["detail"]
    # The version it names: the request crosses the bus, and the record
    # keeps the field; 1.0 does not see it.
    resp = requests.post(api.url + "/v1/migrations", json=body,
                         headers=_at("1.11"), timeout=30)
    assert resp.status_code == 202, resp.text
    url = resp.headers["Location"]
    assert requests.get(url, headers=_at("1.11"), timeout=30).json()[
        "migration"]["volume_type"] == "ssd"
    old = requests.get(url, timeout=30).json()["migration"]
    assert "volume_type" not in old and "progress" not in old
    assert old["source_ref"] == "mv-%s" % RUN_ID


def _openstack(api, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    return subprocess.run(
        [OPENSTACK, "--os-auth-type", "none", "--os-endpoint", api.url,
         *args], capture_output=True, text=True, timeout=120, env=env)


def _created(api, source, version):
    listed = requests.get(api.url + "/v1/migrations?source=%s" % source,
                          headers=_at(version), timeout=30).json()
    return listed["migrations"]


def test_the_cli_speaks_its_newest_version_to_a_current_server(api):
    source = "mv-cli-%s" % RUN_ID
    done = _openstack(api, "cs2os", "import", source, "--volume-type",
                      "ssd", "-f", "value", "-c", "id")
    assert done.returncode == 0, done.stderr
    (record,) = _created(api, source, MAX)
    assert record["volume_type"] == "ssd"
    assert done.stdout.strip() == record["id"]


def test_a_pinned_cli_version_refuses_a_newer_field(api):
    done = _openstack(api, "--os-cs2os-api-version", "1.10", "cs2os",
                      "import", "mv-pin-%s" % RUN_ID, "--volume-type", "ssd")
    assert done.returncode == 1
    assert "This command's field volume_type needs cs2os API version " \
        "1.11, but --os-cs2os-api-version is 1.10" in done.stderr
    assert _created(api, "mv-pin-%s" % RUN_ID, MAX) == []
    done = _openstack(api, "--os-cs2os-api-version", "1.99", "cs2os",
                      "migration", "list")
    assert done.returncode != 0
    assert "this client speaks cs2os API versions 1.0 to %s" % MAX in \
        done.stderr


def test_the_cli_negotiates_down_to_an_older_server(older_api, api):
    doc = requests.get(older_api.url + "/", timeout=10).json()["versions"]
    assert doc[0]["max_version"] == "1.5"
    source = "mv-old-%s" % RUN_ID
    done = _openstack(older_api, "cs2os", "import", source, "--project",
                      "p-%s" % RUN_ID, "-f", "value", "-c", "id")
    assert done.returncode == 0, done.stderr
    (record,) = _created(older_api, source, "1.5")
    assert done.stdout.strip() == record["id"]
    # The CLI spoke 1.5: a request of 1.0 to 1.4 with its project (1.5)
    # would have been refused.  Answered at 1.5, the record has 1.5's
    # fields and none later (asked of the current server, whose table
    # knows which those are).
    (record,) = _created(api, source, "1.5")
    assert "target_project_id" in record and "config_drive" not in record
    done = _openstack(older_api, "cs2os", "import", source + "-x",
                      "--volume-type", "ssd")
    assert done.returncode == 1
    assert "This command's field volume_type needs cs2os API version " \
        "1.11, but the server supports versions 1.0 to 1.5" in done.stderr
    done = _openstack(older_api, "cs2os", "plan", "list")
    assert done.returncode == 1
    assert "/v1/plans needs cs2os API version 1.10, but the server " \
        "supports versions 1.0 to 1.5" in done.stderr
