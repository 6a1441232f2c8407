"""The OpenAPI 3.0 document of cs2os-api, built from api/schemas.py.

Request bodies, query parameters and headers are the very schema objects
the handlers validate with, converted to OpenAPI 3.0's dialect of JSON
Schema, so the document cannot drift from what the API accepts.  It is
served at GET /v1/openapi.json and printed by
``python -m cs2os_agent.api.openapi``; tests validate it with
openapi-spec-validator and fuzz the running API from it (schemathesis).
"""

import copy
import functools
import json
import sys

import cs2os_agent
from cs2os_agent.api import schemas
from cs2os_agent.common import states

OPENAPI_VERSION = "3.0.3"
PATH = "/v1/openapi.json"

# The JSON Schema keywords OpenAPI 3.0 knows; the conversion refuses any
# other, so a new keyword in schemas.py cannot slip into the document
# meaning nothing to its readers.
_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items",
    "enum", "minLength", "maxLength", "pattern", "format", "minimum",
    "maxItems", "minItems",
    "maximum", "minProperties", "maxProperties", "allOf", "anyOf", "oneOf",
    "not", "description", "nullable",
}


def to_openapi(schema):
    """A JSON Schema (2020-12, as schemas.py writes it) as an OpenAPI 3.0
    Schema Object."""
    schema = dict(schema)
    variants = schema.get("anyOf", [])
    if {"type": "null"} in variants:
        # 3.0 has no "null" type: {"anyOf": [S, null]} is S, nullable.
        others = [v for v in variants if v != {"type": "null"}]
        del schema["anyOf"]
        if len(others) == 1:
            # The outer schema's own keys (its description) win.
            schema = dict(others[0], **schema)
        else:
            schema["anyOf"] = others
        schema["nullable"] = True
    if "propertyNames" in schema:
        # Not in 3.0; kept as an extension so the rule is still written
        # down (the API enforces it).
        schema["x-propertyNames"] = to_openapi(schema.pop("propertyNames"))
    unknown = sorted(k for k in schema
                     if k not in _KEYWORDS and not k.startswith("x-"))
    if unknown:
        raise ValueError("OpenAPI 3.0 has no %s" % ", ".join(unknown))
    for key in ("properties",):
        if key in schema:
            schema[key] = {n: to_openapi(s) for n, s in schema[key].items()}
    for key in ("additionalProperties", "items", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = to_openapi(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [to_openapi(s) for s in schema[key]]
    return schema


def _ref(kind, name):
    return {"$ref": "#/components/%s/%s" % (kind, name)}


def _json(schema, description):
    return {"description": description,
            "content": {"application/json": {"schema": schema}}}


_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": "string", "nullable": True}
_OBJECT = {"type": "object"}
_INTEGER = {"type": "integer"}
_LINKS = {"type": "array", "items": {
    "type": "object", "required": ["rel", "href"],
    "properties": {"rel": _STRING, "href": _STRING}}}
_VERSION = {
    "type": "object",
    "required": ["id", "status", "min_version", "max_version", "links"],
    "description": "min_version and max_version: the microversions "
                   "served (OpenStack-API-Version: cs2os 1.N); version is "
                   "max_version, as Nova says it",
    "properties": {"id": _STRING, "status": _STRING,
                   "min_version": _STRING, "max_version": _STRING,
                   "version": _STRING, "links": _LINKS}}


def _migration(with_events):
    """What migrations.view() shows of a record.  Open-ended (no
    additionalProperties: false): a newer API may show more."""
    props = {name: _NULLABLE_STRING for name in (
        "source_vm_id", "source_vm_name", "target_host", "compute_host",
        "flavor", "error", "user_id", "project_id", "request_id",
        "created_at", "updated_at", "started_at", "finished_at")}
    props["project_id"] = dict(
        _NULLABLE_STRING, description="the project of the caller who "
        "created the migration")
    props["target_project_id"] = dict(
        _NULLABLE_STRING, description="the Keystone project id the "
        "server lands in (the request's project, else the one its "
        "project_map, then [cloudstack] project_map, gives the VM's "
        "CloudStack owner); null "
        "until the first step resolved it. Its readers may list and show "
        "the migration")
    props.update({
        "id": {"type": "string", "format": "uuid"},
        "state": {"type": "string", "enum": list(states.ALL)},
        "step": _STRING,
        "mode": {"type": "string", "enum": list(states.MODES)},
        "source_ref": _STRING,
        "delete_source": {"type": "boolean", "nullable": True},
        "committed": {"type": "boolean", "nullable": True,
                      "description": "the Nova server was asked to start "
                                     "on the migrated disk: from here on "
                                     "nothing rolls back and the "
                                     "CloudStack VM is never started "
                                     "again"},
        "bytes_done": _INTEGER, "bytes_total": _INTEGER,
        "rate_bps": _INTEGER,
        "progress": {
            "type": "object",
            "description": "the current step's own progress: its place "
                           "in the flow (step_number of steps) and, when "
                           "it copies (image, sync, mirror, ready), its "
                           "bytes_done, bytes_total and rate_bps; a step "
                           "that copies nothing has no byte figures "
                           "(the top-level ones are the last copy's)",
            "properties": {
                "step": _NULLABLE_STRING, "steps": _INTEGER,
                "step_number": {"type": "integer", "nullable": True},
                "bytes_done": _INTEGER, "bytes_total": _INTEGER,
                "rate_bps": _INTEGER}},
        "result": {"type": "object", "nullable": True},
        "resources": {"type": "object", "nullable": True},
        "networks": {"type": "object",
                     "additionalProperties": _STRING},
        "drop_unmapped_nics": {"type": "boolean"},
        "config_drive": {"type": "boolean",
                         "description": "the Nova server has a config "
                                        "drive"},
        "keep_snapshots": {"type": "boolean",
                           "description": "the root volume's internal "
                                          "snapshots were asked to be kept"},
        "live_fallback": {"type": "boolean",
                          "description": "live migrations: a refusal of "
                                         "live mode was allowed to fall "
                                         "back to warm mode (the mode then "
                                         "says warm, result.live_fallback "
                                         "why)"},
        "volume_type": {"type": "string", "nullable": True,
                        "description": "the Cinder volume type the request "
                                       "named for the data disks"},
        "cutover": {"type": "string", "enum": list(states.CUTOVERS),
                    "description": "warm and live migrations only"},
        "cutover_method": {
            "type": "string", "enum": list(states.CUTOVER_METHODS),
            "description": "warm migrations only: the method the cutover "
                           "runs with (the cutover action's, else the "
                           "request's)"},
        "cutover_requested": {"type": "object", "nullable": True,
                              "description": "warm migrations only: who "
                                             "asked for the cutover, when, "
                                             "which method"},
        "start_at": {"type": "string", "nullable": True,
                     "description": "the requested start time (UTC): "
                                    "queued until then"},
        "aggregate": {"type": "string", "nullable": True,
                      "description": "the Nova host aggregate the "
                                     "request named (target_host: the "
                                     "host chosen from it at admission); "
                                     "shown with the host details only"},
        "cutover_window": {"type": "object", "nullable": True,
                           "description": "warm migrations only: the "
                                          "window (start, end, UTC) the "
                                          "cutover must begin in"},
    })
    required = ["id", "state", "step", "mode", "source_ref"]
    if with_events:
        props["events"] = {"type": "array", "items": {
            "type": "object",
            "properties": {"created_at": _STRING, "step": _STRING,
                           "kind": _STRING, "message": _STRING}}}
        required.append("events")
    return {"type": "object", "required": required, "properties": props}


_ERROR = {
    "type": "object", "required": ["errors"],
    "description": "OpenStack API-SIG error body: the detail names the "
                   "problem, the code is stable for scripts to match on "
                   "(cs2os.InvalidRequest, cs2os.MigrationNotFound, ...)",
    "properties": {"errors": {"type": "array", "minItems": 1, "items": {
        "type": "object",
        "required": ["status", "code", "title", "detail"],
        "properties": {"status": _INTEGER, "code": _STRING,
                       "title": _STRING, "detail": _STRING,
                       "request_id": _NULLABLE_STRING}}}},
}

_RESPONSES = {
    "BadRequest": "The request is malformed: the detail names the field, "
                  "parameter or header (cs2os.InvalidRequest), or the "
                  "conductor's refusal (cs2os.Invalid)",
    "Forbidden": "Policy does not allow this caller the operation "
                 "(cs2os.PolicyNotAuthorized); a caller allowed none of "
                 "its rules gets this before anything it sent is read",
    "NotFound": "No such migration, or one of another project "
                "(cs2os.MigrationNotFound)",
    "TooLarge": "The body is larger than [oslo_middleware] "
                "max_request_body_size (cs2os.RequestEntityTooLarge)",
    "UnsupportedMediaType": "The body is not UTF-8 application/json "
                            "(cs2os.UnsupportedMediaType)",
    "ConductorUnavailable": "cs2os-conductor did not answer within [api] "
                            "conductor_timeout "
                            "(cs2os.ConductorUnavailable)",
}


_STATUSES = {"BadRequest": "400", "Unauthorized": "401", "Forbidden": "403",
             "NotFound": "404", "TooLarge": "413",
             "UnsupportedMediaType": "415", "ConductorUnavailable": "503"}


def _responses(ok_status, ok, *errors):
    """An operation's responses: ``errors`` name shared responses
    (components/responses) or are (status, response) of its own."""
    out = {str(ok_status): ok}
    for error in errors:
        if isinstance(error, tuple):
            status, response = error
            out[status] = response
        else:
            out[_STATUSES[error]] = _ref("responses", error)
    return out


_QUERY_DESCRIPTIONS = {"project": {"description": (
    "Only migrations whose target project (target_project_id) is this "
    "Keystone project id. Without cs2os:migration:list:all_projects "
    "(admins have it) a caller sees its token's project's migrations "
    "only, and naming another project is a 403")}}

_AUTHED = ("Unauthorized", "Forbidden", "ConductorUnavailable")
_WITH_BODY = ("BadRequest", "TooLarge", "UnsupportedMediaType")
_MIGRATION_ID = {
    "name": "migration_id", "in": "path", "required": True,
    "schema": {"type": "string", "format": "uuid"}}
_LINK_ID = {"migration_id": "$response.body#/migration/id"}


def _paths():
    migration = _json({"type": "object", "required": ["migration"],
                       "properties": {"migration": _ref("schemas",
                                                        "Migration")}},
                      "The migration")
    accepted = dict(migration, description="Accepted; the record as it is "
                                           "now")
    created = dict(accepted, headers={"Location": {
        "required": True, "description": "The new migration's URL",
        "schema": {"type": "string"}}}, links={
        "showMigration": {"operationId": "showMigration",
                          "parameters": _LINK_ID},
        "migrationAction": {"operationId": "migrationAction",
                            "parameters": _LINK_ID}})
    return {
        "/": {"get": {
            "operationId": "listVersions", "security": [],
            "summary": "The version document (no token needed)",
            "responses": _responses(200, _json({
                "type": "object", "required": ["versions"],
                "properties": {"versions": {"type": "array",
                                            "items": _VERSION}}},
                "The API versions"))}},
        "/v1/": {"get": {
            "operationId": "showVersion",
            "summary": "The v1 version document",
            "responses": _responses(200, _json({
                "type": "object", "required": ["version"],
                "properties": {"version": _VERSION}}, "Version v1"),
                "Unauthorized")}},
        PATH: {"get": {
            "operationId": "showOpenAPI", "security": [],
            "summary": "This document (no token needed)",
            "responses": _responses(200, _json(
                _OBJECT, "The OpenAPI document of /v1"))}},
        "/v1/migrations": {
            "get": {
                "operationId": "listMigrations",
                "summary": "Migrations, newest first, a page at a time",
                "description": "Admins see every project's migrations; "
                               "a project's readers and members those "
                               "whose target project is their token's "
                               "project",
                "parameters": [
                    dict({"name": name, "in": "query", "required": False,
                          "schema": to_openapi(schema)},
                         **_QUERY_DESCRIPTIONS.get(name, {}))
                    for name, schema in sorted(schemas.LIST_QUERY.items())],
                "responses": _responses(200, _json({
                    "type": "object", "required": ["migrations"],
                    "properties": {
                        "migrations": {"type": "array", "items": _ref(
                            "schemas", "MigrationSummary")},
                        "migrations_links": _LINKS}},
                    "A page of migrations; migrations_links has the "
                    "next page when this one is full"),
                    ("400", _json(_ref("schemas", "Error"),
                                  "A bad parameter, or a marker that is "
                                  "not a known migration "
                                  "(cs2os.InvalidMarker)")),
                    *_AUTHED)},
            "post": {
                "operationId": "createMigration",
                "summary": "Start migrating a CloudStack VM",
                "description": "Admins only by default, and so is the "
                               "choice of the project the server lands "
                               "in (project)",
                "parameters": [{
                    "name": schemas.IDEMPOTENCY_KEY_HEADER, "in": "header",
                    "required": False,
                    "description": "Makes the POST safe to retry: a "
                                   "repeated key (in the same project) "
                                   "answers with the migration the first "
                                   "request created",
                    "schema": to_openapi(schemas.IDEMPOTENCY_KEY)}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": to_openapi(
                        schemas.CREATE_MIGRATION)}}},
                "responses": _responses(
                    202, created, *_WITH_BODY, *_AUTHED,
                    ("200", _json(
                        {"type": "object", "required": ["preflight"],
                         "properties": {"preflight": {
                             "type": "object",
                             "required": ["ok", "findings", "plan",
                                          "summary"]}}},
                        "dry_run: the preflight report (ok, findings "
                        "{check, severity critical|warning, message}, "
                        "plan, summary); nothing was recorded")),
                    ("409", _json(_ref("schemas", "Error"),
                                  "The VM already has an active migration "
                                  "(cs2os.MigrationConflict, naming it)")),
                    ("422", _json(_ref("schemas", "Error"),
                                  "The Idempotency-Key was used for a "
                                  "different request "
                                  "(cs2os.IdempotencyKeyReused)")))}},
        "/v1/migrations/{migration_id}": {"get": {
            "operationId": "showMigration",
            "summary": "One migration with its events",
            "description": "A migration whose target project is not the "
                           "caller's is not found (404) unless the "
                           "caller is an admin",
            "parameters": [_MIGRATION_ID],
            "responses": _responses(200, migration, "NotFound",
                                    *_AUTHED)}},
        "/v1/migrations/{migration_id}/action": {"post": {
            "operationId": "migrationAction",
            "summary": "cancel, retry or cutover a migration",
            "parameters": [_MIGRATION_ID],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": to_openapi(
                    schemas.MIGRATION_ACTION)}}},
            "responses": _responses(
                202, accepted, "NotFound", *_WITH_BODY, *_AUTHED,
                ("409", _json(_ref("schemas", "Error"),
                              "The migration's state forbids the action "
                              "(cs2os.MigrationStateConflict)")))}},
    }


@functools.lru_cache(maxsize=1)
def _document():
    # Here, not at the top: openapi_plans builds on this module.
    from cs2os_agent.api import openapi_plans
    from cs2os_agent.api import openapi_versions

    responses = {name: _json(_ref("schemas", "Error"), text)
                 for name, text in _RESPONSES.items()}
    # keystonemiddleware answers a missing or bad token with its own body.
    responses["Unauthorized"] = _json(
        _OBJECT, "No valid Keystone token (X-Auth-Token)")
    # Each operation and field added after 1.0 says which version it needs.
    return openapi_versions.annotate({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "cs2os API",
            "version": cs2os_agent.__version__,
            "description": (
                "Moves CloudStack KVM VMs into OpenStack Nova. Every error "
                "is JSON in the API-SIG format; a client's mistake is a "
                "4xx, never a 5xx."),
        },
        "paths": dict(_paths(), **openapi_plans.paths()),
        "components": {
            "schemas": {"Error": _ERROR,
                        "Migration": _migration(with_events=True),
                        "MigrationSummary": _migration(with_events=False),
                        "Plan": openapi_plans.plan_schema(with_vms=True),
                        "PlanSummary": openapi_plans.plan_schema(
                            with_vms=False)},
            "responses": responses,
            "securitySchemes": {"keystone": {
                "type": "apiKey", "in": "header", "name": "X-Auth-Token",
                "description": "A Keystone token"}},
        },
        "security": [{"keystone": []}],
    })


def document(server_url=None):
    """The document; a copy, with ``server_url`` as its server if given."""
    doc = copy.deepcopy(_document())
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def main():
    json.dump(document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
