"""JSON schemas of the request bodies, query strings and headers of /v1.

The API validates with these, and cs2os_agent/api/openapi.py publishes
the same objects as the OpenAPI document: what the document promises is
what the code checks.  Keywords are kept to those OpenAPI 3.0 has (the
one exception, propertyNames, is carried over as x-propertyNames).
"""

import re

import jsonschema

from cs2os_agent.api import errors
from cs2os_agent.common import states

# A name or id: not blank, and no control characters, which no CloudStack
# or OpenStack name has and some databases refuse to store (PostgreSQL:
# NUL), which would make a client's typo a 500 after the API let it in.
# "not" rather than an anchored pattern: "$" also matches before a final
# newline in Python but not in ECMA regexes.
_NAME = {"type": "string", "minLength": 1, "maxLength": 255,
         "pattern": r"\S", "not": {"pattern": r"[\x00-\x1f\x7f]"},
         "description": "a non-blank string of at most 255 characters "
                        "without control characters"}
_OPTIONAL_NAME = {"anyOf": [_NAME, {"type": "null"}]}
# The project a server lands in; conductor/request.py checks it again,
# and that it is printable, which JSON Schema cannot say.
_PROJECT = {"anyOf": [_NAME, {"type": "null"}],
            "description": "the Keystone project (id or name) the server "
                           "lands in; default: the one [cloudstack] "
                           "project_map gives the VM's CloudStack owner. "
                           "Printable characters only (no no-break or "
                           "zero-width spaces inside either): the "
                           "conductor refuses others with a 400 "
                           "(cs2os.Invalid)"}

# Cutover options mean something for a warm migration only (the conductor
# refuses them otherwise too); said here so that the published schema
# describes exactly the bodies that are accepted.
_WARM_ONLY = {
    "description": "cutover and cutover_method apply to warm and live "
                   "migrations only",
    "anyOf": [
        {"not": {"anyOf": [{"required": ["cutover"]},
                           {"required": ["cutover_method"]}]}},
        {"properties": {"mode": {"enum": [states.WARM, states.LIVE]}},
         "required": ["mode"]},
    ],
}

_LIVE_ONLY = {
    "description": "live_fallback applies to live migrations only",
    "anyOf": [{"not": {"required": ["live_fallback"]}},
              {"properties": {"mode": {"enum": [states.LIVE]}},
               "required": ["mode"]}],
}

_WINDOW_WARM_ONLY = {
    "description": "cutover_window applies to warm migrations only",
    "anyOf": [
        {"not": {"required": ["cutover_window"]}},
        {"properties": {"mode": {"enum": [states.WARM]}},
         "required": ["mode"]},
    ],
}

# keep_snapshots: true is refused for a warm migration (the mirror copies
# the current state only); false is accepted with either mode.
_COLD_ONLY = {
    "description": "keep_snapshots: true applies to cold migrations only",
    "anyOf": [
        {"not": {"properties": {"keep_snapshots": {"enum": [True]}},
                 "required": ["keep_snapshots"]}},
        {"not": {"properties": {"mode": {"enum": [states.WARM,
                                                  states.LIVE]}},
                 "required": ["mode"]}},
    ],
}

# ISO 8601 with a UTC offset; the conductor parses it (and refuses a time
# without an offset, naming the field).
_TIME = {"type": "string", "minLength": 1, "maxLength": 64,
         "description": "ISO 8601 time with its UTC offset, e.g. "
                        "2026-12-07T02:00:00Z"}
_START_AT = dict(_TIME, description="ISO 8601 time with its UTC offset "
                 "(e.g. 2026-12-07T02:00:00Z): the migration stays queued, "
                 "cancellable, until then")
_CUTOVER_WINDOW = {
    "type": "object", "required": ["start", "end"],
    "properties": {"start": _TIME, "end": _TIME},
    "additionalProperties": False,
    "description": "warm only: the mirror is held READY until start and "
                   "the cutover begins before end; if end passes first "
                   "the migration fails and the CloudStack VM keeps "
                   "running (refused: an end before the start, or past)"}

_AGGREGATE = {"anyOf": [_NAME, {"type": "null"}],
              "description": "a Nova host aggregate (id, uuid or name): "
                             "the conductor picks the compute host among "
                             "its usable hosts when the migration is "
                             "admitted (the one with a free slot and the "
                             "fewest migrations in flight); excludes "
                             "host"}
# Both say where the server goes; the conductor refuses both too.
_HOST_OR_AGGREGATE = {
    "description": "host or aggregate, not both",
    "not": {"properties": {"host": _NAME, "aggregate": _NAME},
            "required": ["host", "aggregate"]},
}


def _map(what, option, wins):
    """A request's own map: the keys and values of [cloudstack] ``option``
    (conductor/maps.py checks them again, and that they are printable)."""
    return {"type": "object", "maxProperties": 1000,
            "propertyNames": _NAME, "additionalProperties": _NAME,
            "description": "%s, looked up before [cloudstack] %s; a key "
                           "it does not have falls through to that "
                           "option (at most 1000 entries). The request's "
                           "%s wins over both" % (what, option, wins)}


_MAPS = {
    "project_map": _map(
        "CloudStack owner (project id or name, <domain path or name>/"
        "<account>, or '*' for every other owner) -> Keystone project id "
        "or name", "project_map", "project"),
    "flavor_map": _map(
        "CloudStack service offering id or name -> Nova flavor id or "
        "name", "flavor_map", "flavor"),
    "volume_type_map": _map(
        "CloudStack disk offering or primary storage pool id or name -> "
        "Cinder volume type id or name", "volume_type_map", "volume_type"),
}

CREATE_MIGRATION = {
    "type": "object",
    "properties": {
        "migration": {
            "type": "object",
            "properties": {
                "source": _NAME,
                "host": _OPTIONAL_NAME,
                "aggregate": _AGGREGATE,
                "flavor": _OPTIONAL_NAME,
                "mode": {"type": "string", "enum": list(states.MODES)},
                "cutover": {"type": "string",
                            "enum": list(states.CUTOVERS)},
                "cutover_method": {"type": "string",
                                   "enum": list(states.CUTOVER_METHODS)},
                "live_fallback": {
                    "type": "boolean",
                    "description": "live only: a refusal of live mode "
                                   "switches the migration to warm mode "
                                   "instead of failing it (default false)"},
                "delete_source": {"type": "boolean"},
                "networks": {
                    "type": "object",
                    "propertyNames": _NAME,
                    "additionalProperties": _NAME,
                },
                "drop_unmapped_nics": {"type": "boolean"},
                "config_drive": {
                    "type": "boolean",
                    "description": "give the Nova server a config drive, "
                                   "for a guest whose cloud-init cannot "
                                   "reach a metadata service (default "
                                   "false)"},
                "volume_type": {
                    "anyOf": [_NAME, {"type": "null"}],
                    "description": "the Cinder volume type (id or name) of "
                                   "the volumes the data disks become "
                                   "(default: [cloudstack] "
                                   "volume_type_map, else Cinder's "
                                   "default type)"},
                "keep_snapshots": {
                    "type": "boolean",
                    "description": "cold only: copy the root volume whole "
                                   "and keep its internal qcow2 snapshots "
                                   "(CloudStack VM snapshots) in the disk; "
                                   "by default they are dropped and only "
                                   "the current state's data is copied"},
                "dry_run": {
                    "type": "boolean",
                    "description": "answer 200 with the preflight report "
                                   "(what would be done, what would stop "
                                   "it) and record and create nothing"},
                "project": _PROJECT,
                "start_at": _START_AT,
                "cutover_window": _CUTOVER_WINDOW,
                **_MAPS,
            },
            "required": ["source"],
            "additionalProperties": False,
            "allOf": [_WARM_ONLY, _WINDOW_WARM_ONLY, _COLD_ONLY,
                      _LIVE_ONLY, _HOST_OR_AGGREGATE],
        },
    },
    "required": ["migration"],
    "additionalProperties": False,
}

_NO_ARGS = {"type": "object", "additionalProperties": False}

MIGRATION_ACTION = {
    "type": "object",
    "properties": {"cancel": _NO_ARGS, "retry": _NO_ARGS,
                   "cutover": {
                       "type": "object",
                       "properties": {"method": {
                           "type": "string",
                           "enum": list(states.CUTOVER_METHODS)}},
                       "additionalProperties": False}},
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
}

LIST_QUERY = {
    "state": {"type": "string", "enum": list(states.ALL)},
    "source": _NAME,
    "host": _NAME,
    # The target project's Keystone id (db filter target_project_id).
    "project": _NAME,
    "limit": {"type": "integer", "minimum": 1},
    "marker": {"type": "string", "format": "uuid"},
    # The plan that started them (db filter plan_id).
    "plan_id": {"type": "string", "format": "uuid"},
}

# POST /v1/migrations: a retried request with the same key gets the
# migration the first one created.  Visible ASCII at both ends: HTTP drops
# a header value's outer spaces, so a key must not depend on them.  (An
# anchored pattern is exact here: a header value holds no newline.)
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY = {"type": "string", "minLength": 1, "maxLength": 255,
                   "pattern": r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$",
                   "description": "1-255 printable ASCII characters, not "
                                  "starting or ending with a space"}

# Plans (/v1/plans): the fields a plan's defaults and a VM's overrides
# may set are a migration request's but the VM, dry_run and the key; the
# conductor checks them together (a VM's cutover over the plan's mode).
# An override that sets cutover or cutover_method says mode warm too,
# one that sets keep_snapshots says mode cold (or none).
_PLAN_FIELDS = {
    "type": "object",
    "properties": {k: v for k, v in CREATE_MIGRATION["properties"][
        "migration"]["properties"].items()
        if k not in ("source", "dry_run")},
    "additionalProperties": False,
    "allOf": [_WARM_ONLY, _WINDOW_WARM_ONLY, _COLD_ONLY, _LIVE_ONLY,
              _HOST_OR_AGGREGATE],
}
_TAG = {"allOf": [_NAME, {"pattern": "=",
                          "description": "key=value"}]}
PLAN_SELECTOR_KEYS = ("account", "domain", "project", "zone", "tag", "host",
                      "pool")
PLAN_LIMIT_KEYS = ("max_in_flight", "max_per_compute_host",
                   "max_per_kvm_host", "max_per_pool")
CREATE_PLAN = {
    "type": "object",
    "properties": {"plan": {
        "type": "object",
        "properties": {
            "name": _NAME,
            "defaults": _PLAN_FIELDS,
            "vms": {"type": "array", "minItems": 1, "maxItems": 1000,
                    "items": {"anyOf": [
                _NAME,
                {"type": "object", "required": ["vm"],
                 "properties": {"vm": _NAME, "overrides": _PLAN_FIELDS},
                 "additionalProperties": False}]},
                "description": "CloudStack VM ids or names, or {vm, "
                               "overrides}, in the order they start"},
            "selector": {
                "type": "object", "minProperties": 1,
                "properties": {k: _TAG if k == "tag" else _NAME
                               for k in PLAN_SELECTOR_KEYS},
                "additionalProperties": False,
                "description": "CloudStack VMs matching every key given "
                               "(ids or names; tag is key=value; host is "
                               "the KVM host; pool the primary storage of "
                               "the ROOT volume), resolved at create into "
                               "the plan's VMs, after those in vms"},
            "limits": {
                "type": "object",
                "properties": {k: {"type": "integer", "minimum": 0,
                                   "maximum": 10000}
                               for k in PLAN_LIMIT_KEYS},
                "additionalProperties": False,
                "description": "caps on the plan's own migrations in "
                               "flight (0: none), in addition to the "
                               "[conductor] max_* limits on everyone's"},
            "start_at": dict(_START_AT, description="the default start "
                             "time of the plan's migrations (a VM's "
                             "overrides may set its own); not with "
                             "defaults.start_at"),
        },
        "required": ["name"],
        "additionalProperties": False,
        "anyOf": [{"required": ["vms"]}, {"required": ["selector"]}],
    }},
    "required": ["plan"],
    "additionalProperties": False,
}
PLAN_ACTION = {
    "type": "object",
    "properties": {"validate": _NO_ARGS, "start": _NO_ARGS,
                   "cancel": _NO_ARGS, "retry": _NO_ARGS},
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
}
PLAN_STATES = ("draft", "running", "done", "cancelled")
PLAN_LIST_QUERY = {
    "name": _NAME,
    "state": {"type": "string", "enum": list(PLAN_STATES)},
}

_INTEGER = re.compile(r"-?[0-9]+")
# More than any page size; int() would take up to 4300 digits.
_MAX_DIGITS = 18


# The rules between fields that name the mode they were broken under.
_CROSS_FIELD = (_WARM_ONLY, _WINDOW_WARM_ONLY, _LIVE_ONLY)


def _first_error(schema, instance):
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.FormatChecker())
    found = list(validator.iter_errors(instance))
    # A cross-field rule is reported only when each field is fine alone:
    # "'hot' is not one of ['cold', 'warm', 'live']" says more than the
    # rule.
    plain = [e for e in found if e.schema not in _CROSS_FIELD]
    if plain or not found:
        return jsonschema.exceptions.best_match(plain)
    # The rule itself, not best_match's pick among its branches ("'cold'
    # is not one of ['warm']").
    return found[0]


def _message(error):
    """jsonschema's message, or a better one where it says too little."""
    text = _text(error)
    if "propertyNames" in error.absolute_schema_path:
        # The error is about a key, not the value under it.
        text = "key " + text
    return text


def _text(error):
    if error.schema in _CROSS_FIELD:
        mode = error.instance.get("mode", states.DEFAULT_MODE)
        return "%s (mode is %s)" % (error.schema["description"], mode)
    if error.validator in ("pattern", "not") and \
            "description" in error.schema:
        # Not "does not match '\\S'": what the value must be.
        return "%r must be %s" % (error.instance,
                                  error.schema["description"])
    if error.validator == "additionalProperties":
        # jsonschema says "Additional properties are not allowed ('x' was
        # unexpected)"; add what is allowed.
        return "%s; allowed: %s" % (error.message, ", ".join(
            sorted(error.schema.get("properties", {}))))
    if error.validator == "maxProperties" and \
            "properties" not in error.schema:
        # A map: not jsonschema's message, which quotes all of it.
        return "%d entries; at most %d" % (len(error.instance),
                                           error.schema["maxProperties"])
    if error.validator in ("minProperties", "maxProperties"):
        return "exactly one action is expected, one of: %s" % ", ".join(
            sorted(error.schema["properties"]))
    return error.message


def _where(error):
    path = "/".join(str(p) for p in error.absolute_path)
    return "body" + ("/" + path if path else "")


def validate(schema, body):
    """Raise a 400 ApiError naming the first problem in ``body``."""
    error = _first_error(schema, body)
    if error is None:
        return body
    raise errors.ApiError(400, "%s: %s" % (_where(error), _message(error)),
                          "cs2os.InvalidRequest")


def validate_header(request, name, schema):
    """The header's value checked against ``schema``; None when absent."""
    value = request.headers.get(name)
    if value is None:
        return None
    error = _first_error(schema, value)
    if error is not None:
        raise errors.ApiError(400, "header %s: %s" % (name, _message(error)),
                              "cs2os.InvalidRequest")
    return value


def validate_query(params, schemas=None):
    """Check GET /v1/migrations parameters (or those of ``schemas``,
    {name: schema}); returns them typed."""
    schemas = LIST_QUERY if schemas is None else schemas
    unknown = sorted(set(params) - set(schemas))
    if unknown:
        raise errors.ApiError(
            400, "unknown query parameter(s) %s; allowed: %s"
            % (", ".join(unknown), ", ".join(sorted(schemas))),
            "cs2os.InvalidRequest")
    typed = {}
    for name, values in params.items():
        if len(values) > 1:
            raise errors.ApiError(
                400, "query parameter %s is given %d times; give it once"
                % (name, len(values)), "cs2os.InvalidRequest")
        value = values[0]
        if schemas[name].get("type") == "integer":
            # Plain ASCII digits: int() would also take " 5", "1_0" and
            # other scripts' digits.
            if not _INTEGER.fullmatch(value):
                raise errors.ApiError(
                    400, "query parameter %s must be an integer, not %r"
                    % (name, value[:100]), "cs2os.InvalidRequest")
            if len(value.lstrip("-")) > _MAX_DIGITS:
                raise errors.ApiError(
                    400, "query parameter %s has more than %d digits"
                    % (name, _MAX_DIGITS), "cs2os.InvalidRequest")
            value = int(value)
        typed[name] = value
    for name, value in typed.items():
        error = _first_error(schemas[name], value)
        if error is not None:
            raise errors.ApiError(
                400, "query parameter %s: %s" % (name, _message(error)),
                "cs2os.InvalidRequest")
    return typed
