"""The /v1/plans part of the OpenAPI document (api/openapi.py), built
from the schemas api/plans.py validates with."""

from cs2os_agent.api import openapi
from cs2os_agent.api import schemas

_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": "string", "nullable": True}
_INTEGER = {"type": "integer"}
_STATES = ("queued", "running", "succeeded", "failed", "cancelled",
           "skipped", "not_started", "pending")
_ROW = {
    "type": "object",
    "description": "one VM of the plan: its migration's state, step and "
                   "error; skipped (a critical preflight finding), "
                   "not_started (its migration could not be created: "
                   "error says why) or pending (a draft plan's VM)",
    "properties": {
        "vm": _STRING, "vm_id": _NULLABLE_STRING,
        "vm_name": _NULLABLE_STRING,
        "overrides": {"type": "object"},
        "migration_id": _NULLABLE_STRING, "state": _STRING,
        "step": _NULLABLE_STRING, "error": _NULLABLE_STRING,
        "bytes_done": _INTEGER, "bytes_total": _INTEGER,
        "preflight": {"type": "object", "nullable": True,
                      "description": "the last validate's result: ok, "
                                     "summary, findings, estimate"}}}

_EVENT = {
    "type": "object",
    "description": "the plan's event log, oldest first: created, "
                   "validated, started, migration_created, skipped, "
                   "not_started, ended (a VM's migration, with its state), "
                   "cancelled, retried, done",
    "properties": {"created_at": _STRING, "kind": _STRING,
                   "vm": _NULLABLE_STRING,
                   "migration_id": _NULLABLE_STRING, "message": _STRING}}


def plan_schema(with_vms):
    props = {name: _NULLABLE_STRING for name in (
        "user_id", "project_id", "created_at", "updated_at")}
    props.update({
        "id": {"type": "string", "format": "uuid"}, "name": _STRING,
        "state": {"type": "string", "enum": list(schemas.PLAN_STATES)},
        "defaults": {"type": "object"},
        "selector": {"type": "object", "nullable": True},
        "limits": {"type": "object", "nullable": True,
                   "description": "the plan's own caps on its migrations "
                                  "in flight"},
        "counts": {"type": "object", "properties": {
            s: _INTEGER for s in _STATES}},
        "vm_count": _INTEGER, "bytes_done": _INTEGER,
        "bytes_total": _INTEGER,
        "failed": {"type": "array", "items": {
            "type": "object", "properties": {
                "vm": _STRING, "migration_id": _NULLABLE_STRING,
                "error": _NULLABLE_STRING}}}})
    required = ["id", "name", "state", "counts"]
    if with_vms:
        props["vms"] = {"type": "array", "items": _ROW}
        # (Not required: an API version before 1.12 leaves it out.)
        props["events"] = {"type": "array", "items": _EVENT}
        required.append("vms")
    return {"type": "object", "required": required, "properties": props}


_PLAN_ID = {"name": "plan_id", "in": "path", "required": True,
            "schema": {"type": "string", "format": "uuid"}}
_AUTHED = ("Unauthorized", "Forbidden", "ConductorUnavailable")
_WITH_BODY = ("BadRequest", "TooLarge", "UnsupportedMediaType")


def _error(text):
    return openapi._json(openapi._ref("schemas", "Error"), text)


def paths():
    plan = openapi._json({"type": "object", "required": ["plan"],
                          "properties": {"plan": openapi._ref(
                              "schemas", "Plan")}}, "The plan")
    not_found = ("404", _error("No such plan (cs2os.PlanNotFound)"))
    conflict = ("409", _error("The plan's state forbids it "
                              "(cs2os.PlanStateConflict)"))
    return {
        "/v1/plans": {
            "get": {
                "operationId": "listPlans", "summary": "Plans, newest first",
                "parameters": [
                    {"name": name, "in": "query", "required": False,
                     "schema": openapi.to_openapi(schema)}
                    for name, schema in sorted(
                        schemas.PLAN_LIST_QUERY.items())],
                "responses": openapi._responses(200, openapi._json({
                    "type": "object", "required": ["plans"],
                    "properties": {"plans": {"type": "array", "items":
                                             openapi._ref("schemas",
                                                          "PlanSummary")}}},
                    "The plans"), "BadRequest", *_AUTHED)},
            "post": {
                "operationId": "createPlan",
                "summary": "Create a plan (state draft) from VMs and/or a "
                           "CloudStack selector",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": openapi.to_openapi(
                        schemas.CREATE_PLAN)}}},
                "responses": openapi._responses(
                    201, dict(plan, headers={"Location": {
                        "required": True, "schema": _STRING,
                        "description": "The new plan's URL"}}),
                    ("404", _error("The selector matches no CloudStack "
                                   "VM (cs2os.PlanSelectsNothing)")),
                    *_WITH_BODY, *_AUTHED)}},
        "/v1/plans/{plan_id}": {
            "get": {"operationId": "showPlan",
                    "summary": "A plan with its VMs and their migrations",
                    "parameters": [_PLAN_ID],
                    "responses": openapi._responses(200, plan, not_found,
                                                    *_AUTHED)},
            "delete": {"operationId": "deletePlan",
                       "summary": "Delete a plan none of whose migrations "
                                  "is active",
                       "parameters": [_PLAN_ID],
                       "responses": openapi._responses(
                           204, {"description": "Deleted"}, not_found,
                           conflict, *_AUTHED)}},
        "/v1/plans/{plan_id}/action": {"post": {
            "operationId": "planAction",
            "summary": "validate, start, cancel or retry a plan",
            "parameters": [_PLAN_ID],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": openapi.to_openapi(
                    schemas.PLAN_ACTION)}}},
            "responses": openapi._responses(
                202, plan, not_found, conflict, *_WITH_BODY, *_AUTHED)}},
    }
