"""The input of a plan, checked before anything is recorded: its name,
defaults and per-VM overrides (as a create_migration request would be),
its VMs, its CloudStack selector and its own limits; each problem is an
Invalid that names where it is."""

import re

from cs2os_agent.common import exception
from cs2os_agent.conductor import maps
from cs2os_agent.conductor import request as request_schema
from cs2os_agent.conductor.flow import admission

# What defaults and per-VM overrides may set: a request's fields but the
# VM itself, dry_run and the idempotency key.
FIELDS = ("host", "aggregate", "flavor", "mode", "cutover", "cutover_method",
          "delete_source", "networks", "drop_unmapped_nics", "config_drive",
          "keep_snapshots", "project", "volume_type", "start_at",
          "cutover_window", "project_map", "flavor_map", "volume_type_map",
          "live_fallback")
PLAN_KEYS = ("name", "defaults", "vms", "selector", "limits", "start_at")
# Caps on the plan's own migrations in flight (flow/admission.py).
LIMIT_NAMES = admission.LIMIT_NAMES
MAX_LIMIT = 10000
SELECTOR = ("account", "domain", "project", "zone", "tag", "host", "pool")
MAX_VMS = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def invalid(reason):
    return exception.Invalid(reason=reason)


def name(value, what):
    """As the API's schema says a name is: not blank, at most 255
    characters, no control characters (C0 and DEL)."""
    if not isinstance(value, str) or not value.strip() \
            or len(value) > 255 or _CONTROL.search(value):
        raise invalid("%s must be 1 to 255 characters without control "
                      "characters, not blank" % what)
    return value.strip()


# Each says where the server goes: a VM's override of one replaces the
# plan's default of the other.
PLACES = ("host", "aggregate")


def merge(defaults, overrides):
    """A VM's request fields: the plan's ``defaults`` with its
    ``overrides`` over them."""
    merged = dict(defaults or {})
    if any(overrides.get(k) is not None for k in PLACES):
        for key in PLACES:
            merged.pop(key, None)
    merged.update(overrides)
    for key in maps.FIELDS:
        if isinstance(overrides.get(key), dict) and \
                isinstance((defaults or {}).get(key), dict):
            # A VM's map adds to and overrides the plan's entries (a plan's
            # and a VM's maps, key by key); it drops none of them.
            merged[key] = {**defaults[key], **overrides[key]}
    return merged


def fields(values, where, defaults=None):
    """``values`` (defaults or overrides) checked as a request would be,
    over ``defaults``; raises Invalid naming ``where``."""
    if not isinstance(values, dict):
        raise invalid("%s must be an object" % where)
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise invalid("%s: unknown field(s) %s; known: %s" % (
            where, ", ".join(map(str, unknown)), ", ".join(FIELDS)))
    try:
        checked = request_schema.validate(dict(merge(defaults, values),
                                               source="x"))
    except exception.Invalid as exc:
        raise invalid("%s: %s" % (where, exc.kwargs.get("reason"))) \
            from None
    out = {k: v for k, v in values.items() if v is not None}
    # Times as the record keeps them (UTC).
    for key in ("start_at", "cutover_window"):
        if key in out:
            out[key] = checked[key]
    return out


def limits(values):
    """The plan's caps, checked: {name: whole number >= 0}, 0 or absent
    meaning no cap of the plan's own."""
    if values is None:
        return None
    if not isinstance(values, dict):
        raise invalid("limits must be an object with any of %s"
                      % ", ".join(LIMIT_NAMES))
    unknown = sorted(set(values) - set(LIMIT_NAMES))
    if unknown:
        raise invalid("limits: unknown key(s) %s; known: %s" % (
            ", ".join(map(str, unknown)), ", ".join(LIMIT_NAMES)))
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 0 <= value <= MAX_LIMIT:
            raise invalid("limits %s must be a whole number from 0 (no "
                          "cap) to %d, not %r" % (name, MAX_LIMIT, value))
    return {k: v for k, v in values.items() if v} or None


def items(vms, defaults):
    if not isinstance(vms, list):
        raise invalid("vms must be a list of VM ids or names, or of "
                      "{vm, overrides} objects")
    items = []
    for entry in vms:
        overrides = {}
        if isinstance(entry, dict):
            extra = sorted(set(entry) - {"vm", "overrides"})
            if extra:
                raise invalid("vms: unknown key(s) %s; known: vm, "
                              "overrides" % ", ".join(map(str, extra)))
            overrides = entry.get("overrides") or {}
            entry = entry.get("vm")
        ref = name(entry, "a VM (its CloudStack id or name)")
        items.append({"vm": ref, "overrides": fields(
            overrides, "overrides of %s" % ref, defaults)})
    return items


def selector(selector):
    if not isinstance(selector, dict) or not selector:
        raise invalid("selector must be an object with one or more of %s"
                      % ", ".join(SELECTOR))
    unknown = sorted(set(selector) - set(SELECTOR))
    if unknown:
        raise invalid("selector: unknown key(s) %s; known: %s" % (
            ", ".join(map(str, unknown)), ", ".join(SELECTOR)))
    out = {k: name(v, "selector %s" % k) for k, v in selector.items()}
    if "tag" in out and "=" not in out["tag"]:
        raise invalid("selector tag must be key=value")
    return out
