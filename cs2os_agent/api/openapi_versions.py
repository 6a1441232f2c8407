"""Which microversion each part of the OpenAPI document needs.

api/openapi.py builds the document from the schemas; this marks, from
the table in common/microversions.py, every operation, parameter, request
field and answer field added after 1.0 with ``x-cs2os-min-version`` (an
OpenAPI extension: unmarked means 1.0), and lists the versions in
``info.x-cs2os-versions``.  A feature registered in the table is marked
here without any change to this module.
"""

from cs2os_agent.common import microversions

MARK = "x-cs2os-min-version"

_DESCRIPTION = (
    " Microversions: a request says the version it speaks in the header "
    "OpenStack-API-Version: cs2os 1.N (or cs2os latest); without it, it "
    "is 1.0. Operations, parameters and fields marked %s need that "
    "version: a request of an older one using a field, parameter or "
    "header is a 400 (cs2os.VersionTooOld), a route a 404; a version "
    "outside min..max (GET /) is a 406 (cs2os.VersionNotAcceptable). "
    "Answers carry OpenStack-API-Version and Vary, and leave out the "
    "fields their version does not have." % MARK)

# Answer schemas (components) and the resource whose view.* keys they
# follow.
_VIEWS = {"Migration": "migration", "MigrationSummary": "migration",
          "Plan": "plan", "PlanSummary": "plan"}


def _marked(obj, key):
    """``obj`` with the mark of ``key`` if it is newer than 1.0 (a copy:
    the document's builders share some schema objects)."""
    needed = microversions.needs(key)
    if needed <= microversions.MIN_VERSION or not isinstance(obj, dict):
        return obj
    return dict(obj, **{MARK: str(needed)})


def _mark_props(schema, prefix):
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return
    for name in list(props):
        props[name] = _marked(props[name], prefix + name)


def _mark_body(kind, schema):
    props = schema.get("properties", {})
    if kind in ("migration_action", "plan_action"):
        for name in list(props):
            _mark_props(props[name], "%s.%s." % (kind, name))
        _mark_props(schema, kind + ".")
        return
    inner = props.get(kind, {})
    if kind == "plan":
        plan_props = inner.get("properties", {})
        _mark_props(plan_props.get("defaults"), "migration.")
        for item in plan_props.get("vms", {}).get("items", {}).get(
                "anyOf", []):
            _mark_props(item.get("properties", {}).get("overrides"),
                        "migration.")
    _mark_props(inner, kind + ".")


def _body_kind(path):
    concrete = path.replace("{", "").replace("}", "")
    for pattern, kind in microversions.BODY_KINDS:
        if pattern.fullmatch(concrete):
            return kind
    return None


def _mark_operation(path, method, op):
    collection = path.rstrip("/").rpartition("/")[2]
    params = []
    for param in op.get("parameters", []):
        key = {"query": "query.%s.%s" % (collection, param.get("name")),
               "header": "header.%s" % param.get("name")}.get(
                   param.get("in"))
        params.append(_marked(param, key) if key else param)
    if params:
        op["parameters"] = params
    schema = op.get("requestBody", {}).get("content", {}).get(
        "application/json", {}).get("schema")
    kind = _body_kind(path)
    if method == "post" and kind and isinstance(schema, dict):
        _mark_body(kind, schema)
    route = microversions.route_feature(path)
    return _marked(op, route) if route else op


def annotate(doc):
    """``doc`` (the OpenAPI document) with every version mark."""
    for path, operations in doc["paths"].items():
        for method in list(operations):
            operations[method] = _mark_operation(path, method,
                                                 operations[method])
    for name, resource in _VIEWS.items():
        schema = doc["components"]["schemas"].get(name)
        if schema is not None:
            _mark_props(schema, "view.%s." % resource)
    info = doc["info"]
    info["description"] += _DESCRIPTION
    info["x-cs2os-versions"] = {
        "min_version": str(microversions.MIN_VERSION),
        "max_version": str(microversions.MAX_VERSION),
        "history": [{"version": v, "description": d}
                    for v, d, _keys in microversions.HISTORY]}
    return doc


def unmarked(obj):
    """``obj`` (part of the document) without the version marks: the
    schema the API validates with, as api/schemas.py has it."""
    if isinstance(obj, dict):
        return {k: unmarked(v) for k, v in obj.items() if k != MARK}
    if isinstance(obj, list):
        return [unmarked(v) for v in obj]
    return obj
