"""Bodies, query strings and headers the schemas refuse, each named in
the 400 (api/schemas.py)."""

import pytest

from tests.unit.api.harness import MID
from tests.unit.api.harness import call
from tests.unit.api.harness import error


@pytest.mark.parametrize("body,detail", [
    ({}, "'migration' is a required property"),
    ({"migration": {}}, "body/migration: 'source' is a required property"),
    ({"migration": {"source": "  "}}, "body/migration/source"),
    ({"migration": {"source": "a", "mode": "hot"}},
     "body/migration/mode: 'hot' is not one of ['cold', 'warm', 'live']"),
    ({"migration": {"source": "a", "delete_source": "yes"}},
     "body/migration/delete_source: 'yes' is not of type 'boolean'"),
    ({"migration": {"source": "a", "config_drive": "true"}},
     "body/migration/config_drive: 'true' is not of type 'boolean'"),
    ({"migration": {"source": "a", "config_drive": None}},
     "body/migration/config_drive: None is not of type 'boolean'"),
    ({"migration": {"source": "a", "colour": "red"}},
     "('colour' was unexpected); allowed: aggregate, config_drive, cutover, "
     "cutover_method, cutover_window, delete_source, drop_unmapped_nics, "
     "dry_run, flavor, flavor_map, host, "
     "keep_snapshots, live_fallback, mode, networks, project, project_map, "
     "source, "
     "start_at, volume_type, volume_type_map"),
    ({"migration": {"source": "a", "mode": "warm", "cutover": "later"}},
     "body/migration/cutover: 'later' is not one of ['auto', 'manual']"),
    ({"migration": {"source": "a", "mode": "warm",
                    "cutover_method": "reboot"}},
     "body/migration/cutover_method: 'reboot' is not one of ['shutdown', "
     "'force']"),
    ({"migration": {"source": "a", "mode": "warm", "cutover_method": 1}},
     "body/migration/cutover_method: 1 is not of type 'string'"),
    ({"migration": {"source": "a", "networks": {"guest": ""}}},
     "body/migration/networks/guest"),
    ({"migration": {"source": "a", "networks": ["guest"]}},
     "body/migration/networks: ['guest'] is not of type 'object'"),
    ([], "body: [] is not of type 'object'"),
    ({"migration": {"source": "a", "cutover": "manual"}},
     "body/migration: cutover and cutover_method apply to warm and live "
     "migrations only (mode is cold)"),
    ({"migration": {"source": "a", "mode": "cold", "cutover_method": "force"}},
     "(mode is cold)"),
    # A field's own mistake is named before the cross-field rule.
    ({"migration": {"source": "a", "mode": "hot", "cutover": "manual"}},
     "body/migration/mode: 'hot' is not one of ['cold', 'warm', 'live']"),
    ({"migration": {"source": "web\x001"}},
     "body/migration/source: 'web\\x001' must be a non-blank string of at "
     "most 255 characters without control characters"),
    ({"migration": {"source": "a", "networks": {"": "n"}}},
     "body/migration/networks: key '' should be non-empty"),
    ({"migration": {"source": "a", "networks": {"g\n": "n"}}},
     "body/migration/networks: key 'g\\n' must be a non-blank string"),
    ({"migration": {"source": "a", "project": ""}},
     "body/migration/project"),
    ({"migration": {"source": "a", "host": "c1", "aggregate": "wave-3"}},
     "must be host or aggregate, not both"),
    ({"migration": {"source": "a", "aggregate": ""}},
     "body/migration/aggregate"),
    ({"migration": {"source": "a", "flavor_map": {"Small": ""}}},
     "body/migration/flavor_map/Small"),
    ({"migration": {"source": "a", "project_map": {"": "acme"}}},
     "body/migration/project_map: key"),
    ({"migration": {"source": "a", "volume_type_map": ["ssd"]}},
     "body/migration/volume_type_map: ['ssd'] is not of type 'object'"),
    ({"migration": {"source": "a", "flavor_map": {
        "o%d" % n: "m1.small" for n in range(1001)}}},
     "body/migration/flavor_map: 1001 entries; at most 1000"),
    ({"migration": {"source": "a", "project": " \t"}},
     "body/migration/project"),
    ({"migration": {"source": "a", "project": "p" * 256}},
     "body/migration/project"),
    ({"migration": {"source": "a", "project": "ten\x00ant"}},
     "body/migration/project: 'ten\\x00ant' must be a non-blank string"),
    ({"migration": {"source": "a", "project": 7}},
     "body/migration/project"),
    ("migration", "body: 'migration' is not of type 'object'"),
    (b"null", "body: None is not of type 'object'"),
    (7, "body: 7 is not of type 'object'"),
])
def test_create_rejects_bad_bodies_naming_the_field(app, conductor, body,
                                                     detail):
    resp, data = call(app, "POST", "/v1/migrations", body)
    assert resp.status_int == 400
    assert detail in error(data)["detail"]
    assert error(data)["code"] == "cs2os.InvalidRequest"
    assert error(data)["request_id"].startswith("req-")
    assert conductor.calls == []


@pytest.mark.parametrize("query,detail", [
    ("colour=red", "unknown query parameter(s) colour; allowed: host, "
     "limit, marker, plan_id, project, source, state"),
    ("limit=ten", "query parameter limit must be an integer, not 'ten'"),
    ("limit=0", "query parameter limit: 0 is less than the minimum of 1"),
    ("state=done", "query parameter state: 'done' is not one of"),
    ("marker=xyz", "query parameter marker: 'xyz' is not a 'uuid'"),
    ("state=failed&state=queued", "query parameter state is given 2 times"),
    ("project=", "query parameter project: '' should be non-empty"),
    ("project=%20", "query parameter project: ' ' must be a non-blank"),
    ("project=a&project=b", "query parameter project is given 2 times"),
])
def test_list_rejects_bad_queries(app, conductor, query, detail):
    resp, data = call(app, "GET", "/v1/migrations?" + query)
    assert resp.status_int == 400
    assert detail in error(data)["detail"]
    assert conductor.calls == []


@pytest.mark.parametrize("body,detail", [
    ({}, "exactly one action is expected, one of: cancel, cutover, retry"),
    ({"cutover": {"force": True}}, "body/cutover: Additional properties"),
    ({"cutover": {"method": "reboot"}},
     "body/cutover/method: 'reboot' is not one of ['shutdown', 'force']"),
    ({"cutover": {"method": None}},
     "body/cutover/method: None is not of type 'string'"),
    ({"cutover": {"method": "force", "now": True}},
     "body/cutover: Additional properties"),
    ({"cutover": "force"}, "body/cutover: 'force' is not of type 'object'"),
    ({"retry": {"method": "force"}}, "body/retry: Additional properties"),
    ({"cancel": {}, "retry": {}}, "exactly one action is expected"),
    ({"explode": {}}, "'explode' was unexpected"),
    ({"cancel": {"force": True}}, "body/cancel: Additional properties"),
])
def test_bad_actions(app, conductor, body, detail):
    resp, data = call(app, "POST", "/v1/migrations/%s/action" % MID, body)
    assert resp.status_int == 400
    assert detail in error(data)["detail"]
    assert conductor.calls == []


@pytest.mark.parametrize("key,detail", [
    ("", "'' should be non-empty"),
    ("k" * 256, "is too long"),
    ("caf\xe9", "'café' must be 1-255 printable ASCII characters, not "
     "starting or ending with a space"),
    ("a\x7f", "must be 1-255 printable ASCII"),
    (" a", "must be 1-255 printable ASCII"),
    ("a\t", "must be 1-255 printable ASCII"),
])
def test_a_bad_idempotency_key_is_a_400_naming_the_header(app, conductor,
                                                          key, detail):
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": {"source": "web-1"}},
                      headers={"Idempotency-Key": key})
    assert resp.status_int == 400
    assert error(data)["detail"].startswith("header Idempotency-Key: ")
    assert detail in error(data)["detail"]
    assert conductor.calls == []
