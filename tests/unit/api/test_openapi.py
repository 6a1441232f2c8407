"""The OpenAPI document: valid, public, and built from the schemas the
API validates with (api/openapi.py)."""

import openapi_spec_validator
import pytest
from keystonemiddleware import opts as ksm_opts

from cs2os_agent.api import app as api_app
from cs2os_agent.api import openapi
from cs2os_agent.api import openapi_versions
from cs2os_agent.api import schemas
from cs2os_agent.common import exception
from tests.unit.api.harness import MID
from tests.unit.api.harness import call


def test_the_openapi_document_is_valid_openapi_3_0():
    doc = openapi.document("http://api.test:9877")
    assert doc["openapi"].startswith("3.0.")
    openapi_spec_validator.validate(doc)


def test_the_openapi_document_answers_without_a_token(config, conductor):
    for group, opts in ksm_opts.list_auth_token_opts():
        config.register_opts(opts, group=group)
    config.set_override("www_authenticate_uri", "http://127.0.0.1:5000",
                        group="keystone_authtoken")
    app = api_app.build(config, conductor)
    resp, data = call(app, "GET", "/v1/openapi.json")
    assert resp.status_int == 200
    assert data == openapi.document("http://api.test:9877")
    assert data["servers"] == [{"url": "http://api.test:9877"}]
    # Only that exact path is public.
    resp, _ = call(app, "GET", "/v1/openapi.json/")
    assert resp.status_int == 401
    assert conductor.calls == []


def test_the_document_publishes_the_schemas_the_api_validates_with():
    # As the API validates with, once the version marks are left out.
    paths = openapi_versions.unmarked(openapi.document()["paths"])
    create = paths["/v1/migrations"]["post"]
    assert create["requestBody"]["content"]["application/json"][
        "schema"] == openapi.to_openapi(schemas.CREATE_MIGRATION)
    ((header,),) = [create["parameters"]]
    assert (header["name"], header["in"], header["schema"]) == (
        "Idempotency-Key", "header",
        openapi.to_openapi(schemas.IDEMPOTENCY_KEY))
    assert {p["name"]: p["schema"] for p in
            paths["/v1/migrations"]["get"]["parameters"]} == {
        name: openapi.to_openapi(s)
        for name, s in schemas.LIST_QUERY.items()}
    action = paths["/v1/migrations/{migration_id}/action"]["post"]
    assert action["requestBody"]["content"]["application/json"][
        "schema"] == openapi.to_openapi(schemas.MIGRATION_ACTION)
    # The errors it names are the conductor's, with their statuses.
    for status, name in (("409", "MigrationConflict"),
                         ("422", "IdempotencyKeyReused")):
        assert "cs2os.%s" % name in create["responses"][status][
            "description"]
        assert getattr(exception, name).code == int(status)


def test_every_documented_operation_is_routed(app):
    for path, item in openapi.document()["paths"].items():
        for method in item:
            resp, data = call(app, method.upper(),
                              path.replace("{migration_id}", MID)
                              .replace("{plan_id}", MID),
                              {} if method == "post" else None)
            assert resp.status_int in (200, 204, 400), (method, path, data)


@pytest.mark.parametrize("schema,converted", [
    ({"anyOf": [{"type": "string"}, {"type": "null"}]},
     {"type": "string", "nullable": True}),
    ({"type": "object", "propertyNames": {"minLength": 1}},
     {"type": "object", "x-propertyNames": {"minLength": 1}}),
    ({"properties": {"a": {"anyOf": [{"type": "integer"},
                                      {"type": "null"}]}}},
     {"properties": {"a": {"type": "integer", "nullable": True}}}),
    # The outer description wins over the inner one.
    ({"anyOf": [{"type": "string", "description": "inner"},
                {"type": "null"}], "description": "outer"},
     {"type": "string", "nullable": True, "description": "outer"}),
])
def test_json_schema_becomes_openapi_3_0(schema, converted):
    assert openapi.to_openapi(schema) == converted


def test_a_keyword_openapi_3_0_lacks_is_refused():
    with pytest.raises(ValueError, match="OpenAPI 3.0 has no const"):
        openapi.to_openapi({"properties": {"a": {"const": 1}}})


def test_the_document_describes_the_target_project():
    doc = openapi.document()
    create = doc["paths"]["/v1/migrations"]["post"]
    project = create["requestBody"]["content"]["application/json"][
        "schema"]["properties"]["migration"]["properties"]["project"]
    assert (project["type"], project["nullable"], project["maxLength"]) \
        == ("string", True, 255)
    assert "Keystone project (id or name) the server lands in" in \
        project["description"]
    (query,) = [p for p in doc["paths"]["/v1/migrations"]["get"][
        "parameters"] if p["name"] == "project"]
    assert "cs2os:migration:list:all_projects" in query["description"]
    for name in ("Migration", "MigrationSummary"):
        shown = doc["components"]["schemas"][name]["properties"]
        assert shown["target_project_id"]["nullable"]
        assert "null until the first step resolved it" in \
            shown["target_project_id"]["description"]


def test_the_document_describes_the_config_drive():
    doc = openapi.document()
    create = doc["paths"]["/v1/migrations"]["post"]
    asked = create["requestBody"]["content"]["application/json"][
        "schema"]["properties"]["migration"]["properties"]["config_drive"]
    assert asked["type"] == "boolean"
    assert "default false" in asked["description"]
    for name in ("Migration", "MigrationSummary"):
        shown = doc["components"]["schemas"][name]["properties"]
        assert shown["config_drive"]["type"] == "boolean"
