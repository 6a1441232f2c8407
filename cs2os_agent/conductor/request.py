"""Checks a create_migration request before anything is recorded.

The values a request may name (modes, cutovers, cutover methods) and its
defaults are common/states.py's, which the API and the CLI read too.
"""

from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor import maps
from cs2os_agent.conductor import schedule

# As the API's schema allows for a name (Keystone's own limit is 64).
MAX_PROJECT = 255

_FIELDS = {
    "source": str,
    "host": str,
    # A Nova host aggregate (name, id or uuid) instead of a host: admission
    # picks one of its hosts (conductor/flow/placement.py).
    "aggregate": str,
    "flavor": str,
    "mode": str,
    "delete_source": bool,
    "networks": dict,
    "drop_unmapped_nics": bool,
    # The Nova server gets a config drive, for guests whose cloud-init
    # cannot reach a metadata service.
    "config_drive": bool,
    # Copy the root volume whole and keep its internal qcow2 snapshots
    # (CloudStack VM snapshots) in the disk; else they are dropped and
    # the data only they need is not copied.
    "keep_snapshots": bool,
    # Answer with the preflight report (conductor/preflight.py) and record
    # and create nothing.
    "dry_run": bool,
    "cutover": str,
    "cutover_method": str,
    # Live only: a refusal of live mode at validate (conductor/flow/
    # live.py) switches the migration to warm instead of failing it.
    "live_fallback": bool,
    # The Keystone project (id or name) the server lands in, instead of
    # the one [cloudstack] project_map gives the VM's CloudStack owner.
    "project": str,
    # The Cinder volume type (id or name) of every data disk's volume,
    # instead of the one [cloudstack] volume_type_map gives it.
    "volume_type": str,
    # The request's (or plan's) own maps, looked up before the
    # [cloudstack] options of the same names (conductor/maps.py).
    "project_map": dict,
    "flavor_map": dict,
    "volume_type_map": dict,
    # From the API's Idempotency-Key header: a retry returns the same
    # migration.
    "idempotency_key": str,
    # ISO 8601 time (with its UTC offset): the migration stays queued,
    # claimed by no conductor, until then (conductor/schedule.py).
    "start_at": str,
    # Warm only: {"start", "end"} ISO 8601 times; the mirror is held READY
    # until the window opens and the cutover starts inside it
    # (conductor/flow/window.py).
    "cutover_window": dict,
}


def validate(request):
    """Return the request with defaults, or raise Invalid naming the field."""
    if not isinstance(request, dict):
        raise exception.Invalid(reason="a request must be a dict")
    unknown = set(request) - set(_FIELDS)
    if unknown:
        raise exception.Invalid(
            reason="unknown field(s) %s; known: %s"
            % (", ".join(sorted(unknown)), ", ".join(sorted(_FIELDS))))
    for name, kind in _FIELDS.items():
        value = request.get(name)
        if value is not None and not isinstance(value, kind):
            raise exception.Invalid(
                reason="%s must be a %s" % (name, kind.__name__))
    source = (request.get("source") or "").strip()
    if not source:
        raise exception.Invalid(
            reason="source (the CloudStack VM id or name) is required")
    mode = request.get("mode") or states.DEFAULT_MODE
    if mode not in states.MODES:
        raise exception.Invalid(
            reason="mode %s is not supported; supported: %s"
            % (mode, ", ".join(states.MODES)))
    mirrored = mode in (states.WARM, states.LIVE)
    cutover = request.get("cutover")
    if cutover is not None and not mirrored:
        raise exception.Invalid(
            reason="cutover applies to warm and live migrations only "
            "(mode is %s)" % mode)
    cutover = cutover or states.DEFAULT_CUTOVER
    if cutover not in states.CUTOVERS:
        raise exception.Invalid(
            reason="cutover %s is not supported; supported: %s"
            % (cutover, ", ".join(states.CUTOVERS)))
    method = request.get("cutover_method")
    if method is not None and not mirrored:
        raise exception.Invalid(
            reason="cutover_method applies to warm and live migrations "
            "only (mode is %s)" % mode)
    live_fallback = request.get("live_fallback")
    if live_fallback is not None and mode != states.LIVE:
        raise exception.Invalid(
            reason="live_fallback applies to live migrations only (mode is "
            "%s)" % mode)
    method = method or states.DEFAULT_CUTOVER_METHOD
    check_cutover_method(method)
    networks = request.get("networks") or {}
    bad = sorted(k for k, v in networks.items()
                 if not isinstance(k, str) or not k.strip()
                 or not isinstance(v, str) or not v.strip())
    if bad:
        raise exception.Invalid(
            reason="networks maps CloudStack network id or name to Neutron "
            "network id or name; bad entries: %s" % ", ".join(map(str, bad)))
    validated = {
        "networks": networks,
        "drop_unmapped_nics": bool(request.get("drop_unmapped_nics", False)),
        "source": source,
        "host": request.get("host") or None,
        "aggregate": clean_name(request.get("aggregate"), "aggregate (the "
                                "Nova host aggregate id or name)"),
        "flavor": request.get("flavor") or None,
        "mode": mode,
        "delete_source": bool(request.get("delete_source", False)),
        "config_drive": bool(request.get("config_drive", False)),
        "keep_snapshots": bool(request.get("keep_snapshots", False)),
        "dry_run": bool(request.get("dry_run", False)),
        "project": clean_project(request.get("project")),
        "volume_type": clean_name(request.get("volume_type"), "volume_type "
                                  "(the Cinder volume type of the data "
                                  "disks' volumes)"),
    }
    for name in maps.FIELDS:
        if (mapping := maps.clean(request.get(name), name)) is not None:
            validated[name] = mapping
    if validated["host"] and validated["aggregate"]:
        raise exception.Invalid(
            reason="host and aggregate exclude each other: name the compute "
            "host, or the host aggregate to choose one from")
    key = request.get("idempotency_key")
    if key is not None:
        if not 0 < len(key) <= 255 or not key.isprintable() \
                or not key.isascii():
            raise exception.Invalid(
                reason="idempotency_key must be 1 to 255 printable ASCII "
                "characters")
        validated["idempotency_key"] = key
    if validated["keep_snapshots"] and mirrored:
        raise exception.Invalid(
            reason="keep_snapshots applies to cold migrations only: a %s "
            "migration mirrors the volume's current state" % mode)
    if mirrored:
        # Live: they apply once a live refusal fell back to warm (and
        # cutover "manual" is such a refusal).
        validated["cutover"] = cutover
        validated["cutover_method"] = method
    if mode == states.LIVE:
        validated["live_fallback"] = bool(live_fallback)
    check_schedule(request, validated, mode)
    return validated


def check_schedule(request, validated, mode):
    """start_at and cutover_window, as UTC ISO strings, into ``validated``
    (only when given: an older record has neither)."""
    start_at = request.get("start_at")
    if start_at is not None:
        validated["start_at"] = schedule.iso(
            schedule.parse_time(start_at, "start_at"))
    window = request.get("cutover_window")
    if window is None:
        return
    if mode != states.WARM:
        why = ("a live migration has no cutover window yet" if mode ==
               states.LIVE else "a cold migration stops the VM before it "
               "copies")
        raise exception.Invalid(
            reason="cutover_window applies to warm migrations only (mode is "
            "%s): %s" % (mode, why))
    opens, ends = schedule.parse_window(window)
    if start_at is not None and \
            schedule.parse_time(start_at, "start_at") >= ends:
        raise exception.Invalid(
            reason="start_at %s is not before the cutover window's end %s"
            % (validated["start_at"], schedule.iso(ends)))
    validated["cutover_window"] = {"start": schedule.iso(opens),
                                   "end": schedule.iso(ends)}


def clean_project(value):
    """The requested Keystone project, stripped; None when not given."""
    return clean_name(value, "project (the Keystone project id or name the "
                      "server lands in)")


def clean_name(value, what):
    """An OpenStack id or name a request gives, stripped; None when not
    given.

    Printable means str.isprintable(), stricter than the API's schema
    (no control characters), which JSON Schema cannot say: a name with
    a no-break or zero-width space inside is refused here, naming it."""
    if value is None:
        return None
    name = value.strip()
    if not 0 < len(name) <= MAX_PROJECT or not name.isprintable():
        raise exception.Invalid(
            reason="%s must be 1 to %d printable characters, not blank"
            % (what, MAX_PROJECT))
    return name


def effective_cutover_method(options):
    """The method a warm migration cuts over with: the operator's cutover
    action may say, else the request, else a clean shutdown."""
    options = options or {}
    requested = options.get("cutover_requested") or {}
    return (requested.get("method") or options.get("cutover_method")
            or states.DEFAULT_CUTOVER_METHOD)


def check_cutover_method(method):
    if method not in states.CUTOVER_METHODS:
        raise exception.Invalid(
            reason="cutover method %s is not supported; supported: %s"
            % (method, ", ".join(states.CUTOVER_METHODS)))
