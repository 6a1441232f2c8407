"""cs2os_agent.osc.client: the exact HTTP requests and error mapping.

A real keystoneauth Session carries the requests; requests_mock answers
them, so what is checked is what would go on the wire.
"""

import pytest
import requests
import requests_mock
from keystoneauth1 import fixture as ksa_fixture
from keystoneauth1 import session as ksa_session
from keystoneauth1 import token_endpoint
from keystoneauth1.identity import v3
from osc_lib import exceptions as osc_exc

from cs2os_agent.osc import client

ENDPOINT = "http://127.0.0.1:9877"
TOKEN = "tok-123"
RECORD = {"id": "m-1", "state": "queued", "source_ref": "web-1"}


@pytest.fixture
def mock():
    with requests_mock.Mocker() as m:
        yield m


@pytest.fixture
def api():
    session = ksa_session.Session(
        auth=token_endpoint.Token(ENDPOINT, TOKEN)
    )
    return client.Client(session)


def sent(mock, index=-1):
    return mock.request_history[index]


def test_create_sends_only_source_when_nothing_else_given(mock, api):
    mock.post(ENDPOINT + "/v1/migrations", status_code=202,
              json={"migration": RECORD})
    assert api.create_migration("web-1") == RECORD
    req = sent(mock)
    assert req.method == "POST"
    assert req.url == ENDPOINT + "/v1/migrations"
    assert req.json() == {"migration": {"source": "web-1"}}
    assert req.headers["X-Auth-Token"] == TOKEN
    assert req.headers["Accept"] == "application/json"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"].startswith("cs2os-osc/")


def test_create_sends_every_given_field(mock, api):
    mock.post(ENDPOINT + "/v1/migrations", status_code=202,
              json={"migration": RECORD})
    api.create_migration("web-1", host="cmp-2", flavor="m1.small",
                         mode="warm", delete_source=False)
    assert sent(mock).json() == {"migration": {
        "source": "web-1", "host": "cmp-2", "flavor": "m1.small",
        "mode": "warm", "delete_source": False,
    }}


def test_get_quotes_the_id_into_one_path_segment(mock, api):
    mock.get(ENDPOINT + "/v1/migrations/a%2F..%3Fx", json={"migration": {}})
    api.get_migration("a/..?x")
    assert sent(mock).url == ENDPOINT + "/v1/migrations/a%2F..%3Fx"


def test_create_sends_the_cutover_fields(mock, api):
    mock.post(ENDPOINT + "/v1/migrations", status_code=202,
              json={"migration": RECORD})
    api.create_migration("web-1", mode="warm", cutover="manual",
                         cutover_method="force")
    assert sent(mock).json() == {"migration": {
        "source": "web-1", "mode": "warm", "cutover": "manual",
        "cutover_method": "force",
    }}


@pytest.mark.parametrize("kwargs, body", [
    ({}, {"cutover": {}}),
    ({"method": None}, {"cutover": {}}),
    ({"method": "force"}, {"cutover": {"method": "force"}}),
    ({"method": "shutdown"}, {"cutover": {"method": "shutdown"}}),
])
def test_cutover_posts_the_method_if_given(mock, api, kwargs, body):
    mock.post(ENDPOINT + "/v1/migrations/m-1/action", status_code=202,
              json={"migration": RECORD})
    assert api.cutover_migration("m-1", **kwargs) == RECORD
    req = sent(mock)
    assert (req.method, req.url, req.json()) == (
        "POST", ENDPOINT + "/v1/migrations/m-1/action", body)


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_actions_post_to_the_action_url(mock, api, action):
    mock.post(ENDPOINT + "/v1/migrations/m-1/action", status_code=202,
              json={"migration": dict(RECORD, state="cancelling")})
    record = getattr(api, action + "_migration")("m-1")
    assert record["state"] == "cancelling"
    req = sent(mock)
    assert req.method == "POST"
    assert req.json() == {action: {}}
    assert req.headers["X-Auth-Token"] == TOKEN


def test_list_filters_become_the_query(mock, api):
    mock.get(ENDPOINT + "/v1/migrations", json={"migrations": [RECORD]})
    assert api.list_migrations(state="running", source="web 1",
                               host="cmp-2") == [RECORD]
    assert sent(mock).url == (ENDPOINT + "/v1/migrations"
                              "?state=running&source=web+1&host=cmp-2")
    assert len(mock.request_history) == 1


def test_the_target_project_is_sent_when_given(mock, api):
    mock.post(ENDPOINT + "/v1/migrations", status_code=202,
              json={"migration": RECORD})
    api.create_migration("web-1", project="tenant a")
    assert sent(mock).json() == {"migration": {"source": "web-1",
                                               "project": "tenant a"}}
    mock.get(ENDPOINT + "/v1/migrations", json={"migrations": [RECORD]})
    api.list_migrations(state="failed", project="8f2c1e0a")
    assert sent(mock).url == (ENDPOINT + "/v1/migrations"
                              "?state=failed&project=8f2c1e0a")


def test_list_follows_next_links_on_our_own_endpoint(mock, api):
    # The API names another host in its links (it sits behind a proxy);
    # the token must not go there, only the query is reused.
    pages = {
        "": {"migrations": [{"id": "a"}, {"id": "b"}], "migrations_links": [
            {"rel": "next",
             "href": "http://internal:1/v1/migrations?limit=2&marker=b"}]},
        "limit=2&marker=b": {"migrations": [{"id": "c"}],
                             "migrations_links": [
            {"rel": "next",
             "href": "http://internal:1/v1/migrations?limit=2&marker=c"}]},
        "limit=2&marker=c": {"migrations": []},
    }
    mock.get(requests_mock.ANY,
             json=lambda req, ctx: pages[req.url.partition("?")[2]])
    records = api.list_migrations()
    assert [r["id"] for r in records] == ["a", "b", "c"]
    assert [r.url for r in mock.request_history] == [
        ENDPOINT + "/v1/migrations",
        ENDPOINT + "/v1/migrations?limit=2&marker=b",
        ENDPOINT + "/v1/migrations?limit=2&marker=c",
    ]
    assert all(r.headers["X-Auth-Token"] == TOKEN
               for r in mock.request_history)


def test_list_with_limit_is_one_page_even_with_a_next_link(mock, api):
    mock.get(ENDPOINT + "/v1/migrations", json={
        "migrations": [{"id": "x"}],
        "migrations_links": [{"rel": "next",
                              "href": ENDPOINT + "/v1/migrations?marker=x"}],
    })
    assert api.list_migrations(limit=1, marker="w") == [{"id": "x"}]
    assert [r.url for r in mock.request_history] == [
        ENDPOINT + "/v1/migrations?limit=1&marker=w"]


def test_list_stops_when_the_api_repeats_a_link(mock, api):
    mock.get(ENDPOINT + "/v1/migrations", json={
        "migrations": [{"id": "x"}],
        "migrations_links": [{"rel": "next",
                              "href": ENDPOINT + "/v1/migrations?marker=x"}],
    })
    with pytest.raises(client.ApiError, match="repeated a page link"):
        api.list_migrations()
    assert len(mock.request_history) == 2


def test_error_body_detail_reaches_the_user(mock, api):
    mock.get(ENDPOINT + "/v1/migrations/1234", status_code=404, json={
        "errors": [{"status": 404, "code": "cs2os.MigrationNotFound",
                    "title": "Not Found",
                    "detail": "Migration 1234 could not be found.",
                    "request_id": "req-9"}]})
    with pytest.raises(osc_exc.CommandError) as info:
        api.get_migration("1234")
    assert str(info.value) == ("Migration 1234 could not be found. "
                               "(HTTP 404, cs2os.MigrationNotFound, req-9)")
    assert info.value.status == 404


def test_error_without_our_shape_falls_back_to_status_and_text(mock, api):
    mock.post(ENDPOINT + "/v1/migrations", status_code=502,
              text="<html>Bad Gateway</html>",
              headers={"x-openstack-request-id": "req-proxy"})
    with pytest.raises(client.ApiError) as info:
        api.create_migration("web-1")
    assert str(info.value) == ("<html>Bad Gateway</html> "
                               "(HTTP 502, req-proxy)")


def test_error_json_of_another_shape_falls_back_to_text(mock, api):
    mock.get(ENDPOINT + "/v1/migrations", status_code=400,
             json={"message": "nope"})
    with pytest.raises(client.ApiError) as info:
        api.list_migrations()
    assert str(info.value) == '{"message": "nope"} (HTTP 400)'


def test_success_that_is_not_json_is_an_error(mock, api):
    mock.get(ENDPOINT + "/v1/migrations/m-1", text="ok")
    with pytest.raises(client.ApiError, match="non-JSON"):
        api.get_migration("m-1")


def test_refused_connection_is_api_unreachable(mock, api):
    mock.get(ENDPOINT + "/v1/migrations/m-1",
             exc=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(client.ApiUnreachable, match="Cannot reach"):
        api.get_migration("m-1")


def _keystone_session(mock, with_cs2os=True):
    """A password-style session whose catalog comes from keystone."""
    auth_url = "http://127.0.0.1:5000/v3"
    token = ksa_fixture.V3Token()
    token.set_project_scope()
    if with_cs2os:
        service = token.add_service("cs2os")
        service.add_standard_endpoints(
            public=ENDPOINT, internal="http://127.0.0.2:9877",
            region="RegionOne",
        )
    mock.post(auth_url + "/auth/tokens", json=token,
              headers={"X-Subject-Token": TOKEN})
    return ksa_session.Session(auth=v3.Token(auth_url, "unscoped"))


def test_endpoint_comes_from_the_catalog_for_the_interface(mock):
    api = client.Client(_keystone_session(mock), region_name="RegionOne",
                        interface="internal")
    mock.get("http://127.0.0.2:9877/v1/migrations/m-1",
             json={"migration": RECORD})
    api.get_migration("m-1")
    assert sent(mock).url == "http://127.0.0.2:9877/v1/migrations/m-1"
    assert sent(mock).headers["X-Auth-Token"] == TOKEN


def test_endpoint_override_beats_the_catalog(mock):
    api = client.Client(_keystone_session(mock),
                        endpoint_override="http://127.0.0.3:1")
    mock.get("http://127.0.0.3:1/v1/migrations/m-1",
             json={"migration": RECORD})
    api.get_migration("m-1")
    assert sent(mock).url == "http://127.0.0.3:1/v1/migrations/m-1"


def test_missing_catalog_entry_says_how_to_set_the_endpoint(mock):
    api = client.Client(_keystone_session(mock, with_cs2os=False))
    with pytest.raises(osc_exc.CommandError, match="--os-cs2os-endpoint"):
        api.get_migration("m-1")
    assert [r.url for r in mock.request_history] == [
        "http://127.0.0.1:5000/v3/auth/tokens"]

