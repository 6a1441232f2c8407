"""JSON schemas of the request bodies and query strings of /v1."""

import jsonschema

from cs2os_agent.api import errors

STATES = ("queued", "running", "cancelling", "succeeded", "failed",
          "cancelled")
MODES = ("cold", "warm")
CUTOVERS = ("auto", "manual")
CUTOVER_METHODS = ("shutdown", "force")

_NAME = {"type": "string", "minLength": 1, "maxLength": 255,
         "pattern": r"\S"}
_OPTIONAL_NAME = {"anyOf": [_NAME, {"type": "null"}]}

CREATE_MIGRATION = {
    "type": "object",
    "properties": {
        "migration": {
            "type": "object",
            "properties": {
                "source": _NAME,
                "host": _OPTIONAL_NAME,
                "flavor": _OPTIONAL_NAME,
                "mode": {"type": "string", "enum": list(MODES)},
                "cutover": {"type": "string", "enum": list(CUTOVERS)},
                "cutover_method": {"type": "string",
                                   "enum": list(CUTOVER_METHODS)},
                "delete_source": {"type": "boolean"},
                "networks": {
                    "type": "object",
                    "propertyNames": _NAME,
                    "additionalProperties": _NAME,
                },
                "drop_unmapped_nics": {"type": "boolean"},
            },
            "required": ["source"],
            "additionalProperties": False,
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
                           "enum": list(CUTOVER_METHODS)}},
                       "additionalProperties": False}},
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
}

LIST_QUERY = {
    "state": {"type": "string", "enum": list(STATES)},
    "source": _NAME,
    "host": _NAME,
    "limit": {"type": "integer", "minimum": 1},
    "marker": {"type": "string", "format": "uuid"},
}


def _where(error):
    path = "/".join(str(p) for p in error.absolute_path)
    return "body" + ("/" + path if path else "")


def validate(schema, body):
    """Raise a 400 ApiError naming the first problem in ``body``."""
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.FormatChecker())
    error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    if error is None:
        return body
    if error.validator == "additionalProperties":
        # jsonschema says "Additional properties are not allowed ('x' was
        # unexpected)"; add what is allowed.
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        detail = "%s: %s; allowed: %s" % (_where(error), error.message,
                                          allowed)
    elif error.validator in ("minProperties", "maxProperties"):
        detail = "%s: exactly one action is expected, one of: %s" % (
            _where(error), ", ".join(sorted(error.schema["properties"])))
    else:
        detail = "%s: %s" % (_where(error), error.message)
    raise errors.ApiError(400, detail, "cs2os.InvalidRequest")


def validate_query(params):
    """Check GET /v1/migrations parameters; returns them typed."""
    unknown = sorted(set(params) - set(LIST_QUERY))
    if unknown:
        raise errors.ApiError(
            400, "unknown query parameter(s) %s; allowed: %s"
            % (", ".join(unknown), ", ".join(sorted(LIST_QUERY))),
            "cs2os.InvalidRequest")
    typed = {}
    for name, values in params.items():
        if len(values) > 1:
            raise errors.ApiError(
                400, "query parameter %s is given %d times; give it once"
                % (name, len(values)), "cs2os.InvalidRequest")
        value = values[0]
        if LIST_QUERY[name].get("type") == "integer":
            try:
                value = int(value)
            except ValueError:
                raise errors.ApiError(
                    400, "query parameter %s must be an integer, not %r"
                    % (name, value), "cs2os.InvalidRequest") from None
        typed[name] = value
    for name, value in typed.items():
        validator = jsonschema.Draft202012Validator(
            LIST_QUERY[name], format_checker=jsonschema.FormatChecker())
        error = jsonschema.exceptions.best_match(
            validator.iter_errors(value))
        if error is not None:
            raise errors.ApiError(
                400, "query parameter %s: %s" % (name, error.message),
                "cs2os.InvalidRequest")
    return typed
