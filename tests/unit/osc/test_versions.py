"""The CLI's microversion negotiation (osc/versions.py) on the wire:
a real keystoneauth Session, requests_mock as the API."""

import pytest
import requests_mock
from keystoneauth1 import session as ksa_session
from keystoneauth1 import token_endpoint
from osc_lib import exceptions as osc_exc

from cs2os_agent.common import microversions
from cs2os_agent.osc import client
from cs2os_agent.osc import plugin
from cs2os_agent.osc import versions

ENDPOINT = "http://127.0.0.1:9877"
MAX = str(microversions.MAX_VERSION)
RECORD = {"id": "m-1", "state": "queued", "source_ref": "web-1"}


@pytest.fixture
def mock():
    with requests_mock.Mocker() as m:
        yield m


def _client(api_version=None):
    session = ksa_session.Session(auth=token_endpoint.Token(ENDPOINT, "t"))
    return client.Client(session, api_version=api_version)


def _server(mock, high, low="1.0"):
    """An API serving ``low``..``high``: 406 above, the record below."""
    def answer(request, context):
        asked = microversions.Version.parse(
            request.headers["OpenStack-API-Version"].split()[1])
        if asked > microversions.Version.parse(high):
            context.status_code = 406
            return {"errors": [{"detail": "version %s is not supported"
                                % (asked,), "code": "cs2os.Version"}]}
        context.status_code = 202
        return {"migration": RECORD}

    mock.get(ENDPOINT + "/", json={"versions": [{
        "id": "v1", "status": "CURRENT", "min_version": low,
        "version": high, "max_version": high, "links": []}]})
    mock.post(ENDPOINT + "/v1/migrations", json=answer)
    mock.get(ENDPOINT + "/v1/migrations/m-1", json=answer)


def _versions_sent(mock):
    return [(r.method, r.path, r.headers.get("OpenStack-API-Version"))
            for r in mock.request_history]


def test_a_server_as_new_as_the_client_costs_no_extra_request(mock):
    _server(mock, MAX)
    api = _client()
    api.create_migration("web-1")
    api.get_migration("m-1")
    assert _versions_sent(mock) == [
        ("POST", "/v1/migrations", "cs2os " + MAX),
        ("GET", "/v1/migrations/m-1", "cs2os " + MAX)]


def test_an_older_server_is_read_once_and_its_maximum_used(mock):
    _server(mock, "1.5")
    api = _client()
    api.create_migration("web-1", project="p")
    api.get_migration("m-1")
    assert _versions_sent(mock) == [
        ("POST", "/v1/migrations", "cs2os " + MAX),
        ("GET", "/", None),
        ("POST", "/v1/migrations", "cs2os 1.5"),
        ("GET", "/v1/migrations/m-1", "cs2os 1.5")]


def test_a_command_the_server_is_too_old_for_names_both_versions(mock):
    _server(mock, "1.5")
    api = _client()
    api.get_migration("m-1")
    with pytest.raises(osc_exc.CommandError) as caught:
        api.create_migration("web-1", volume_type="ssd")
    assert str(caught.value) == (
        "This command's field volume_type needs cs2os API version 1.11, "
        "but the server supports versions 1.0 to 1.5")
    # Refused here: nothing was sent for it.
    assert [r.method for r in mock.request_history] == ["GET", "GET", "GET"]


def test_a_pinned_version_is_sent_and_never_negotiated(mock):
    _server(mock, MAX)
    api = _client(microversions.Version(1, 2))
    api.create_migration("web-1", mode="warm", cutover="manual")
    assert _versions_sent(mock) == [("POST", "/v1/migrations", "cs2os 1.2")]
    with pytest.raises(osc_exc.CommandError, match=(
            "field cutover_method needs cs2os API version 1.3, but "
            "--os-cs2os-api-version is 1.2")):
        api.create_migration("web-1", mode="warm", cutover_method="force")


def test_a_server_newer_than_its_clients_minimum_refuses_plainly(mock):
    mock.post(ENDPOINT + "/v1/migrations", status_code=406, json={})
    mock.get(ENDPOINT + "/", json={"versions": [{
        "id": "v1", "min_version": "1.50", "max_version": "1.60"}]})
    with pytest.raises(osc_exc.CommandError, match=(
            "serves versions 1.50 to 1.60; this client speaks 1.0 to")):
        _client().create_migration("web-1")


@pytest.mark.parametrize("text, version", [
    ("1", None), ("1.latest", None), ("1.4", microversions.Version(1, 4)),
    (MAX, microversions.MAX_VERSION)])
def test_the_option(text, version):
    assert versions.parse_option(text) == version
    assert plugin.check_api_version(text) is True


@pytest.mark.parametrize("text, problem", [
    ("2", "is not 1, 1.latest or 1.N"),
    ("latest", "is not 1, 1.latest or 1.N"),
    ("1.x", "is not 1, 1.latest or 1.N"),
    ("1.999", "this client speaks cs2os API versions 1.0 to %s" % MAX)])
def test_a_bad_option_is_refused(text, problem):
    with pytest.raises(osc_exc.CommandError, match=problem):
        plugin.check_api_version(text)
