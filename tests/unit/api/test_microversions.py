"""Microversions: the table (common/microversions.py), the header, the
refusals of an older version, the trimmed answers and the version
document (api/versioning.py, api/app.py)."""

import pytest

from cs2os_agent.api import migrations
from cs2os_agent.api import openapi
from cs2os_agent.api import openapi_versions
from cs2os_agent.api import schemas
from cs2os_agent.common import microversions
from tests.unit.api.harness import ADMIN
from tests.unit.api.harness import MID
from tests.unit.api.harness import call
from tests.unit.api.harness import error
from tests.unit.api.harness import make_record

V = microversions.Version
NO_HEADER = {"OpenStack-API-Version": None}
MAX = str(microversions.MAX_VERSION)


def _at(version, **headers):
    return dict(ADMIN, **{"OpenStack-API-Version": version}, **headers)


def test_the_history_is_ordered_and_every_version_adds_something():
    versions = [V.parse(v) for v, _d, _k in microversions.HISTORY]
    assert versions == [V(1, n) for n in range(len(versions))]
    assert all(keys and what for _v, what, keys in microversions.HISTORY)
    assert microversions.MIN_VERSION == V(1, 0)
    assert V(1, 10) > V(1, 9)


def test_a_feature_in_two_versions_is_refused(monkeypatch):
    monkeypatch.setattr(microversions, "HISTORY", (
        ("1.0", "a", ("migration.x",)), ("1.1", "b", ("migration.x",))))
    with pytest.raises(ValueError, match="migration.x is in two versions"):
        microversions._features()


def _request_fields():
    migration = schemas.CREATE_MIGRATION["properties"]["migration"]
    plan = schemas.CREATE_PLAN["properties"]["plan"]
    keys = ["migration.%s" % f for f in migration["properties"]]
    keys += ["plan.%s" % f for f in plan["properties"]]
    keys += ["migration_action.%s" % a
             for a in schemas.MIGRATION_ACTION["properties"]]
    keys += ["migration_action.cutover.%s" % a for a in schemas
             .MIGRATION_ACTION["properties"]["cutover"]["properties"]]
    keys += ["plan_action.%s" % a for a in schemas.PLAN_ACTION["properties"]]
    keys += ["query.migrations.%s" % q for q in schemas.LIST_QUERY]
    keys += ["query.plans.%s" % q for q in schemas.PLAN_LIST_QUERY]
    keys.append("header.%s" % schemas.IDEMPOTENCY_KEY_HEADER)
    return keys


def test_every_request_field_and_answer_field_has_a_version():
    # A field added to schemas.py or the view without a line in HISTORY
    # would be taken at 1.0 silently.
    warm = make_record(mode="warm", options={"cutover": "manual"})
    answer = ["view.migration.%s" % f for f in migrations.view(warm)]
    missing = [k for k in _request_fields() + answer
               if k not in microversions.FEATURES]
    assert missing == []


@pytest.mark.parametrize("value, version", [
    (None, V(1, 0)),
    ("cs2os 1.3", V(1, 3)),
    ("CS2OS  1.3", V(1, 3)),
    ("compute 2.90, cs2os 1.5", V(1, 5)),
    ("compute 2.90", V(1, 0)),
    ("cs2os latest", microversions.MAX_VERSION),
])
def test_the_header_names_the_version(value, version):
    assert microversions.from_header(value) == version


@pytest.mark.parametrize("value, problem", [
    ("cs2os 1", "'1' is not a version of the form 1.N or latest"),
    ("cs2os 1.x", "'1.x' is not a version"),
    ("cs2os", "'cs2os' is not 'cs2os <version>'"),
    ("cs2os 1.1, cs2os 1.2", "names cs2os twice"),
])
def test_a_malformed_header_is_a_400(app, value, problem):
    resp, data = call(app, "GET", "/v1/migrations", None,
                      _at(value))
    assert resp.status_int == 400
    assert problem in error(data)["detail"]
    assert error(data)["detail"].startswith("header OpenStack-API-Version")


@pytest.mark.parametrize("value", ["cs2os 1.999", "cs2os 2.0",
                                   "cs2os 0.9"])
def test_an_unsupported_version_is_a_406_naming_min_and_max(
        app, conductor, value):
    resp, data = call(app, "GET", "/v1/migrations", None, _at(value))
    assert resp.status_int == 406
    assert error(data)["code"] == "cs2os.VersionNotAcceptable"
    assert error(data)["detail"].endswith(
        "this API serves cs2os 1.0 to %s" % MAX)
    assert resp.headers["Vary"] == "OpenStack-API-Version"
    assert conductor.calls == []


def test_answers_carry_the_version_and_vary(app):
    resp, _ = call(app, "GET", "/v1/migrations", None, ADMIN)
    assert resp.headers["OpenStack-API-Version"] == "cs2os %s" % MAX
    assert resp.headers["Vary"] == "OpenStack-API-Version"
    resp, _ = call(app, "GET", "/v1/migrations", None, dict(ADMIN,
                                                            **NO_HEADER))
    assert resp.headers["OpenStack-API-Version"] == "cs2os 1.0"
    # Errors too: the version they were answered in.
    resp, _ = call(app, "GET", "/v1/migrations/%s" % "x", None,
                   _at("cs2os 1.2"))
    assert resp.status_int == 404
    assert resp.headers["OpenStack-API-Version"] == "cs2os 1.2"


@pytest.mark.parametrize("body, needed, what", [
    ({"migration": {"source": "a", "volume_type": "ssd"}}, "1.11",
     "field volume_type"),
    ({"migration": {"source": "a", "aggregate": "wave-3"}}, "1.13",
     "field aggregate"),
    ({"migration": {"source": "a", "flavor_map": {"S": "m1.small"}}},
     "1.14", "field flavor_map"),
    ({"migration": {"source": "a", "mode": "warm", "cutover": "manual",
                    "cutover_method": "force"}}, "1.3",
     "field cutover_method"),
    ({"migration": {"source": "a", "networks": {"a": "b"}}}, "1.1",
     "field networks"),
])
def test_a_field_newer_than_the_request_is_a_400_naming_the_version(
        app, conductor, body, needed, what):
    resp, data = call(app, "POST", "/v1/migrations", body, _at("cs2os 1.0"))
    assert resp.status_int == 400
    assert error(data)["code"] == "cs2os.VersionTooOld"
    assert error(data)["detail"] == (
        "%s needs API version %s (OpenStack-API-Version: cs2os %s); this "
        "request is version 1.0" % (what, needed, needed))
    assert conductor.calls == []
    # The version it names is enough.
    resp, _ = call(app, "POST", "/v1/migrations", body,
                   _at("cs2os %s" % needed))
    assert resp.status_int == 202


def test_no_header_is_1_0(app, conductor):
    resp, data = call(app, "POST", "/v1/migrations", {"migration": {
        "source": "a", "project": "p"}}, dict(ADMIN, **NO_HEADER))
    assert resp.status_int == 400
    assert "field project needs API version 1.5" in error(data)["detail"]
    resp, _ = call(app, "POST", "/v1/migrations", {"migration": {
        "source": "a", "mode": "warm"}}, dict(ADMIN, **NO_HEADER))
    assert resp.status_int == 202


def test_actions_query_parameters_and_headers_are_versioned(app):
    url = "/v1/migrations/%s/action" % MID
    resp, data = call(app, "POST", url, {"cutover": {}}, _at("cs2os 1.1"))
    assert resp.status_int == 400
    assert "action cutover needs API version 1.2" in error(data)["detail"]
    resp, data = call(app, "POST", url, {"cutover": {"method": "force"}},
                      _at("cs2os 1.2"))
    assert "action cutover argument method needs API version 1.3" in \
        error(data)["detail"]
    assert call(app, "POST", url, {"cancel": {}},
                _at("cs2os 1.0"))[0].status_int == 202
    resp, data = call(app, "GET", "/v1/migrations?project=p", None,
                      _at("cs2os 1.4"))
    assert "query parameter project needs API version 1.5" in \
        error(data)["detail"]
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": {"source": "a"}},
                      _at("cs2os 1.3", **{"Idempotency-Key": "k"}))
    assert "header Idempotency-Key needs API version 1.4" in \
        error(data)["detail"]


def test_a_route_newer_than_the_request_is_a_404_naming_the_version(app):
    resp, data = call(app, "GET", "/v1/plans/%s" % MID, None,
                      _at("cs2os 1.9"))
    assert resp.status_int == 404
    assert error(data)["detail"] == (
        "no resource at /v1/plans/%s: /v1/plans needs API version 1.10 "
        "(OpenStack-API-Version: cs2os 1.10); this request is version 1.9"
        % MID)
    resp, data = call(app, "POST", "/v1/plans", {"plan": {
        "name": "p", "vms": ["a"], "defaults": {"volume_type": "ssd"}}},
        _at("cs2os 1.10"))
    assert resp.status_int == 400
    assert "field volume_type needs API version 1.11" in \
        error(data)["detail"]


def test_older_versions_do_not_see_later_fields(app, conductor):
    conductor.values = {"mode": "warm", "committed": True,
                        "target_project_id": "tp", "options": {
                            "cutover": "manual", "config_drive": True,
                            "volume_type": "ssd"}}
    shown = {}
    for version in ("1.0", "1.2", "1.5", MAX):
        resp, data = call(app, "GET", "/v1/migrations/%s" % MID, None,
                          _at("cs2os %s" % version))
        shown[version] = data["migration"]
    assert not {"committed", "target_project_id", "networks", "cutover",
                "progress", "config_drive", "volume_type"} & set(
                    shown["1.0"])
    assert shown["1.2"]["cutover"] == "manual"
    assert "cutover_method" not in shown["1.2"]
    assert shown["1.5"]["target_project_id"] == "tp"
    assert "config_drive" not in shown["1.5"]
    assert shown[MAX]["volume_type"] == "ssd"
    assert "progress" in shown[MAX]
    # What 1.0 shows is what 1.0 showed: the record's first fields.
    assert set(shown["1.0"]) == {
        k[len("view.migration."):] for k, v in
        microversions.FEATURES.items()
        if k.startswith("view.migration.") and v == V(1, 0)}


@pytest.mark.parametrize("path", ["/", "/v1", "/v1/"])
def test_the_version_document_lists_min_and_max(app, path):
    # Whatever version is asked for: a client reads it to find out.
    resp, data = call(app, "GET", path, None, _at("cs2os 9.9"))
    assert resp.status_int == 200
    doc = data["versions"][0] if path == "/" else data["version"]
    assert doc == {
        "id": "v1", "status": "CURRENT", "min_version": "1.0",
        "max_version": MAX, "version": MAX,
        "links": [{"rel": "self", "href": "http://api.test:9877/v1/"}]}


def test_the_openapi_document_says_which_version_each_field_needs():
    doc = openapi.document()
    create = doc["paths"]["/v1/migrations"]["post"]
    fields = create["requestBody"]["content"]["application/json"][
        "schema"]["properties"]["migration"]["properties"]
    assert fields["volume_type"]["x-cs2os-min-version"] == "1.11"
    assert fields["cutover_method"]["x-cs2os-min-version"] == "1.3"
    assert "x-cs2os-min-version" not in fields["source"]
    (key,) = create["parameters"]
    assert key["x-cs2os-min-version"] == "1.4"
    assert doc["paths"]["/v1/plans"]["post"]["x-cs2os-min-version"] == \
        "1.10"
    plan = doc["paths"]["/v1/plans"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["plan"]["properties"]
    assert plan["defaults"]["properties"]["volume_type"][
        "x-cs2os-min-version"] == "1.11"
    shown = doc["components"]["schemas"]["Migration"]["properties"]
    assert shown["progress"]["x-cs2os-min-version"] == "1.9"
    info = doc["info"]["x-cs2os-versions"]
    assert (info["min_version"], info["max_version"]) == ("1.0", MAX)
    assert len(info["history"]) == len(microversions.HISTORY)
    assert openapi_versions.unmarked(fields["volume_type"]) == \
        openapi.to_openapi(schemas.CREATE_MIGRATION)["properties"][
            "migration"]["properties"]["volume_type"]


def test_the_client_reads_what_a_request_needs_from_the_same_table():
    found = microversions.request_features(
        "POST", "/v1/migrations", {"migration": {"source": "a",
                                                 "volume_type": "x"}})
    assert microversions.too_new(V(1, 10), found) == (
        "migration.volume_type", V(1, 11))
    assert microversions.too_new(V(1, 2), microversions.request_features(
        "GET", "/v1/migrations?state=failed&project=p")) == (
        "query.migrations.project", V(1, 5))
    assert microversions.too_new(V(1, 0), microversions.request_features(
        "DELETE", "/v1/plans/x")) == ("route./v1/plans", V(1, 10))
    assert microversions.too_new(V(1, 0), microversions.request_features(
        "POST", "/v1/migrations/x/action", {"retry": {}})) is None
