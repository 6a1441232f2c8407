"""The microversions of the cs2os v1 API, and what each one added.

A request says which version it speaks in ``OpenStack-API-Version:
cs2os 1.N`` (or ``cs2os latest``); without the header it gets 1.0, the
API as its first clients knew it, so a client written then keeps meaning
what it meant.  A field, query parameter, header, action or route added
later is refused to a request of an older version, naming the version it
needs, and fields added to an answer later are left out of it.

HISTORY is the only place a version is defined: adding a request field is
one line (a new version, or a feature key appended to the newest one not
yet released); tests/unit/api/test_microversions.py fails for a field of
api/schemas.py or of a migration's answer that no version names.
Feature keys:

    migration.<field>            POST /v1/migrations {"migration": {...}},
                                 and a plan's defaults and VM overrides
    migration.<field>=<value>    the same, with that (string) value: a
                                 value added later to a field's choices
    migration_action.<name>      POST /v1/migrations/{id}/action {name: {}}
    migration_action.<name>.<arg>
    plan.<field>                 POST /v1/plans {"plan": {...}}
    plan_action.<name>           POST /v1/plans/{id}/action
    query.<collection>.<param>   GET /v1/<collection>?<param>=
    header.<Name>                a request header
    route.<path>                 every method on <path> and below it
    view.<resource>.<field>      a field of a migration's or plan's answer

Standard library only: the CLI (cs2os_agent/osc), installed without the
server's dependencies, reads the same table to know what its requests
need.
"""

import collections
import re
import urllib.parse

SERVICE = "cs2os"
HEADER = "OpenStack-API-Version"
LATEST = "latest"

# (version, what it added, feature keys), oldest first; each minor
# version is one feature, in the order the features were built.
HISTORY = (
    ("1.0", "The first API: create (source, host, flavor, mode, "
            "delete_source), list (state, source, host, limit, marker), "
            "show, cancel and retry migrations",
     ("migration.source", "migration.host", "migration.flavor",
      "migration.mode", "migration.delete_source",
      "migration_action.cancel", "migration_action.retry",
      "query.migrations.state", "query.migrations.source",
      "query.migrations.host", "query.migrations.limit",
      "query.migrations.marker") + tuple("view.migration.%s" % f for f in (
          "id", "state", "step", "mode", "source_ref", "source_vm_id",
          "source_vm_name", "target_host", "compute_host", "flavor",
          "delete_source", "bytes_done", "bytes_total", "rate_bps",
          "error", "result", "resources", "user_id", "project_id",
          "request_id", "created_at", "updated_at", "started_at",
          "finished_at", "events"))),
    ("1.1", "Network identity: networks (CloudStack network -> Neutron "
            "network) and drop_unmapped_nics",
     ("migration.networks", "migration.drop_unmapped_nics",
      "view.migration.networks", "view.migration.drop_unmapped_nics")),
    ("1.2", "Warm migration held for the operator: cutover (auto or "
            "manual) and the cutover action",
     ("migration.cutover", "migration_action.cutover",
      "view.migration.cutover")),
    ("1.3", "Clean cutover: cutover_method (shutdown or force), the "
            "cutover action's method, and who asked for the cutover",
     ("migration.cutover_method", "migration_action.cutover.method",
      "view.migration.cutover_method",
      "view.migration.cutover_requested")),
    ("1.4", "Safe retries: the Idempotency-Key header, and committed in "
            "the record",
     ("header.Idempotency-Key", "view.migration.committed")),
    ("1.5", "Owners: project (the Keystone project the server lands in), "
            "the list's project filter, and target_project_id",
     ("migration.project", "query.migrations.project",
      "view.migration.target_project_id")),
    ("1.6", "Identity: config_drive",
     ("migration.config_drive", "view.migration.config_drive")),
    ("1.7", "Internal snapshots: keep_snapshots",
     ("migration.keep_snapshots", "view.migration.keep_snapshots")),
    ("1.8", "Preflight: dry_run answers 200 with the report",
     ("migration.dry_run",)),
    ("1.9", "Progress of the current step: the progress object",
     ("view.migration.progress",)),
    ("1.10", "Plans: /v1/plans, and the migrations list's plan_id filter",
     ("route./v1/plans", "query.migrations.plan_id", "plan.name",
      "plan.defaults", "plan.vms", "plan.selector", "plan_action.validate",
      "plan_action.start", "plan_action.cancel", "plan_action.retry",
      "query.plans.name", "query.plans.state")),
    ("1.11", "Data disks: volume_type (the Cinder volume type of the data "
             "disks' volumes)",
     ("migration.volume_type", "view.migration.volume_type")),
    ("1.12", "Scheduling: start_at, a warm migration's cutover_window, a "
             "plan's start_at and limits, and the plan's event log",
     ("migration.start_at", "migration.cutover_window",
      "view.migration.start_at", "view.migration.cutover_window",
      "plan.start_at", "plan.limits", "view.plan.limits",
      "view.plan.events")),
    ("1.13", "Host aggregates: aggregate (a Nova host aggregate the "
             "conductor picks the host from, instead of host)",
     ("migration.aggregate", "view.migration.aggregate")),
    ("1.14", "Maps in the request: project_map, flavor_map and "
             "volume_type_map (looked up before the [cloudstack] options "
             "of the same names)",
     ("migration.project_map", "migration.flavor_map",
      "migration.volume_type_map")),
    ("1.15", "Live mode: mode live (the running guest moves into Nova's "
             "domain) and live_fallback (a live refusal falls back to "
             "warm mode)",
     ("migration.mode=live", "migration.live_fallback",
      "view.migration.live_fallback")),
)


class Version(collections.namedtuple("Version", "major minor")):
    """A microversion; tuples compare as versions do (1.10 > 1.9)."""

    def __str__(self):
        return "%d.%d" % self

    @classmethod
    def parse(cls, text):
        """"1.N" as a Version; ValueError naming the text otherwise."""
        match = re.fullmatch(r"([0-9]{1,3})\.([0-9]{1,4})", text)
        if not match:
            raise ValueError("%r is not a version of the form 1.N or %s"
                             % (text[:40], LATEST))
        return cls(int(match.group(1)), int(match.group(2)))


def _features():
    found = {}
    for version, _what, keys in HISTORY:
        for key in keys:
            if key in found:
                raise ValueError("feature %s is in two versions" % key)
            found[key] = Version.parse(version)
    return found


FEATURES = _features()
MIN_VERSION = Version.parse(HISTORY[0][0])
MAX_VERSION = Version.parse(HISTORY[-1][0])


class VersionNotAcceptable(ValueError):
    """A well-formed version this API does not serve (406)."""


def from_header(value):
    """The Version an ``OpenStack-API-Version`` value asks of cs2os.

    None (no header) and a header that names other services only are the
    minimum.  ValueError for a malformed one (a 400);
    VersionNotAcceptable for one outside MIN_VERSION..MAX_VERSION.
    """
    if value is None:
        return MIN_VERSION
    asked = None
    # "compute 2.1, cs2os 1.3": one header may speak to several services.
    for part in value.split(","):
        words = part.split()
        if len(words) == 2 and words[0].lower() == SERVICE:
            if asked is not None:
                raise ValueError("it names %s twice" % SERVICE)
            asked = words[1]
        elif words and words[0].lower() == SERVICE:
            raise ValueError("%r is not '%s <version>'"
                             % (part.strip()[:60], SERVICE))
    if asked is None:
        return MIN_VERSION
    if asked.lower() == LATEST:
        return MAX_VERSION
    version = Version.parse(asked)
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise VersionNotAcceptable(
            "version %s is not supported: this API serves %s %s to %s"
            % (version, SERVICE, MIN_VERSION, MAX_VERSION))
    return version


def header_value(version):
    return "%s %s" % (SERVICE, version)


def needs(key):
    """The version that added feature ``key``; 1.0 for anything else."""
    return FEATURES.get(key, MIN_VERSION)


def too_new(version, keys):
    """(key, version needed) of the first of ``keys`` newer than
    ``version`` (the one needing the most), or None."""
    newer = [(needs(k), k) for k in keys if needs(k) > version]
    if not newer:
        return None
    needed, key = max(newer)
    return key, needed


def describe(key):
    """A feature key as a person reads it: "field volume_type"."""
    kind, _, name = key.partition(".")
    field, _, value = name.partition("=")
    return {
        "migration": ("field %s" % name if not value
                      else "%s %s" % (field, value)),
        "plan": "plan field %s" % name,
        "migration_action": "action %s" % name.replace(".", " argument "),
        "plan_action": "plan action %s" % name,
        "query": "query parameter %s" % name.partition(".")[2],
        "header": "header %s" % name,
        "route": "%s" % name,
    }.get(kind, key)


def _keys(value):
    return list(value) if isinstance(value, dict) else []


def _fields(kind, request):
    """The feature keys of a request's fields, and of the values of them
    that a later version added (``<kind>.<field>=<value>``)."""
    if not isinstance(request, dict):
        return []
    found = []
    for name, value in request.items():
        found.append("%s.%s" % (kind, name))
        if isinstance(value, str) and \
                "%s.%s=%s" % (kind, name, value) in FEATURES:
            found.append("%s.%s=%s" % (kind, name, value))
    return found


def body_features(kind, body):
    """The feature keys a request body of ``kind`` (migration,
    migration_action, plan, plan_action) uses; what is not a dict where
    one belongs is left to the JSON schema to refuse."""
    if not isinstance(body, dict):
        return []
    if kind in ("migration_action", "plan_action"):
        found = []
        for name, args in body.items():
            found.append("%s.%s" % (kind, name))
            found += ["%s.%s.%s" % (kind, name, a) for a in _keys(args)]
        return found
    inner = body.get(kind)
    found = _fields(kind, inner)
    if kind == "plan" and isinstance(inner, dict):
        # A plan's defaults and overrides are migration fields.
        vms = inner.get("vms")
        requests = [inner.get("defaults")] + [
            vm.get("overrides") for vm in
            (vms if isinstance(vms, list) else []) if isinstance(vm, dict)]
        for request in requests:
            found += _fields("migration", request)
    return found


def query_features(collection, params):
    return ["query.%s.%s" % (collection, p) for p in params]


def route_feature(path):
    """The route.* key covering ``path`` (the longest), or None."""
    best = None
    for key in FEATURES:
        if key.startswith("route."):
            prefix = key[len("route."):]
            if (path == prefix or path.startswith(prefix + "/")) and \
                    (best is None or len(key) > len(best)):
                best = key
    return best


def hidden(version, resource):
    """The fields of a ``resource`` answer (migration, plan) that
    ``version`` does not know."""
    prefix = "view.%s." % resource
    return {k[len(prefix):] for k, v in FEATURES.items()
            if k.startswith(prefix) and v > version}


BODY_KINDS = (
    (re.compile(r"/v1/migrations/?"), "migration"),
    (re.compile(r"/v1/migrations/[^/]+/action/?"), "migration_action"),
    (re.compile(r"/v1/plans/?"), "plan"),
    (re.compile(r"/v1/plans/[^/]+/action/?"), "plan_action"),
)


def request_features(method, url, body=None, headers=()):
    """Every feature key a request uses: its route, query parameters,
    headers and body (the client's view of what the server checks)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path
    found = [route_feature(path)] if route_feature(path) else []
    collection = path.rstrip("/").rpartition("/")[2]
    found += query_features(collection, [
        k for k, _v in urllib.parse.parse_qsl(parts.query)])
    found += ["header.%s" % h for h in headers]
    if method == "POST":
        for pattern, kind in BODY_KINDS:
            if pattern.fullmatch(path):
                found += body_features(kind, body)
    return found
