"""A request's (or plan's) own project, flavor and volume type maps.

``project_map``, ``flavor_map`` and ``volume_type_map`` in a request have
the keys and values of the [cloudstack] options of the same names.  A
request map is looked up first; a key it does not have falls through to
the [cloudstack] map (a request map adds and overrides entries, it never
empties the operator's), then to the existing fallback (the smallest
fitting flavor, Cinder's default type, or no project: Invalid).  The
request's explicit ``project``/``flavor``/``volume_type`` wins over both.
"""

from cs2os_agent.common import exception

FIELDS = ("project_map", "flavor_map", "volume_type_map")
# A wave of a few hundred VMs names far fewer owners and offerings; the
# cap keeps a migration record (which stores the map) bounded.
MAX_ENTRIES = 1000
MAX_LEN = 255


def clean(value, field):
    """``value`` of request field ``field`` checked: a dict of 1-255
    printable, non-blank strings to the same; None when not given or
    empty.  Invalid names the field and the key."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise exception.Invalid(reason="%s must be a dict" % field)
    if len(value) > MAX_ENTRIES:
        raise exception.Invalid(
            reason="%s has %d entries; at most %d" % (
                field, len(value), MAX_ENTRIES))
    cleaned = {}
    for key, target in value.items():
        if not _good(key):
            raise exception.Invalid(
                reason="%s: key %s must be 1 to %d printable characters, "
                "not blank" % (field, _show(key), MAX_LEN))
        if not _good(target):
            raise exception.Invalid(
                reason="%s: the value of key %s must be 1 to %d printable "
                "characters, not blank" % (field, _show(key), MAX_LEN))
        # Keys are matched exactly against CloudStack's ids and names, as
        # the [cloudstack] options' are; values are OpenStack refs.
        cleaned[key] = target.strip()
    return cleaned or None


def _good(text):
    return (isinstance(text, str) and 0 < len(text) <= MAX_LEN
            and text.strip() != "" and text.isprintable())


def _show(key):
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


def choose(ctx, field, keys):
    """(value, key, where) of the first of ``keys`` in the request's map
    ``field``, else in the [cloudstack] one; where is "request
    flavor_map" or "[cloudstack] flavor_map"; None when neither has any."""
    options = ctx.migration.get("options") or {}
    for where, mapping in (
            ("request %s" % field, options.get(field) or {}),
            ("[cloudstack] %s" % field, getattr(ctx.conf.cloudstack, field)
             or {})):
        key = next((k for k in keys if k and k in mapping), None)
        if key is not None:
            return mapping[key], key, where
    return None
