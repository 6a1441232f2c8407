"""--project-map, --flavor-map and --volume-type-map (import, and a plan's
defaults): the request's own maps, looked up before the [cloudstack]
options of the same names (conductor/maps.py checks them)."""

from osc_lib import exceptions as osc_exc

# (request field, option, metavar, what the key and value are)
OPTIONS = (
    ("project_map", "--project-map", "<owner>=<project>",
     "CloudStack owner (project ID or name, <domain>/<account>, or '*' for "
     "every other owner) to Keystone project (ID or name)"),
    ("flavor_map", "--flavor-map", "<offering>=<flavor>",
     "CloudStack service offering (ID or name) to Nova flavor (ID or "
     "name)"),
    ("volume_type_map", "--volume-type-map", "<offering-or-pool>=<type>",
     "CloudStack disk offering or primary storage pool (ID or name) to "
     "Cinder volume type (ID or name)"),
)


def add_arguments(parser):
    """The three map options; each repeatable, one K=V entry a time."""
    for field, option, metavar, what in OPTIONS:
        parser.add_argument(
            option, metavar=metavar, action="append", dest=field,
            help="Map %s, before [cloudstack] %s (a key it does not have "
            "falls through to that option). Repeat for each entry" % (
                what, field))


def fields(parsed_args):
    """{field: {key: value}} of the map options given (None: not given);
    CommandError naming the option for an entry without '=' or a
    repeated key."""
    found = {}
    for field, option, _metavar, _what in OPTIONS:
        entries = getattr(parsed_args, field, None)
        if not entries:
            found[field] = None
            continue
        mapping = {}
        for entry in entries:
            key, sep, value = entry.partition("=")
            # Keys are CloudStack names matched exactly: only the value's
            # outer spaces (a shell's) are dropped; the conductor checks
            # the rest.
            if not sep or not key or not value.strip():
                raise osc_exc.CommandError(
                    "%s takes KEY=VALUE, not %r" % (option, entry))
            if key in mapping:
                raise osc_exc.CommandError(
                    "%s names key %r twice" % (option, key))
            mapping[key] = value.strip()
        found[field] = mapping
    return found


def given(parsed_args, *groups):
    """The map fields of ``parsed_args`` and those of ``groups`` ({field:
    value or None}) that were given."""
    return {k: v for group in (fields(parsed_args),) + groups
            for k, v in group.items() if v is not None}
