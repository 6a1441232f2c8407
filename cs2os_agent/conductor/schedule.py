"""Start times and cutover windows: parsing, and whether one has come.

Both live in the migration's record (``options["start_at"]``,
``options["cutover_window"]``), never only in a conductor's memory, so
every conductor on the database reads the same schedule and a restarted
one keeps it.  Times are ISO 8601 with a UTC offset ("Z" or "+01:00"),
stored as UTC ("2026-12-07T02:00:00Z").
"""

import datetime

from cs2os_agent.common import exception
from cs2os_agent.common import states

UTC = datetime.timezone.utc


def now():
    return datetime.datetime.now(UTC)


def iso(moment):
    """``moment`` (aware) as the UTC string records and answers carry."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value, what):
    """An aware UTC datetime from an ISO 8601 string, or Invalid naming
    ``what``.  A time without an offset is refused: whose midnight it
    means would be a guess."""
    try:
        moment = datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise exception.Invalid(
            reason="%s must be an ISO 8601 time such as "
            "2026-12-07T02:00:00Z, not %r" % (what, value)) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise exception.Invalid(
            reason="%s %s names no UTC offset: add Z (UTC) or +HH:MM"
            % (what, value))
    return moment.astimezone(UTC)


def parse_window(window):
    """(start, end) of a cutover window {"start", "end"}: the end after
    the start and not yet past; else Invalid saying which."""
    if not isinstance(window, dict) or set(window) != {"start", "end"}:
        raise exception.Invalid(
            reason="cutover_window must be an object with exactly start "
            "and end (ISO 8601 times)")
    opens = parse_time(window["start"], "cutover_window start")
    ends = parse_time(window["end"], "cutover_window end")
    if ends <= opens:
        raise exception.Invalid(
            reason="cutover_window ends (%s) before it starts (%s)"
            % (iso(ends), iso(opens)))
    if ends <= now():
        raise exception.Invalid(
            reason="cutover_window ended already (%s; it is %s now)"
            % (iso(ends), iso(now())))
    return opens, ends


def start_at(migration):
    """The migration's start time (aware UTC), or None."""
    value = (migration.get("options") or {}).get("start_at")
    return parse_time(value, "start_at") if value else None


def waiting_to_start(migration, at=None):
    """The start time a queued migration still waits for, else None."""
    if migration.get("state") != states.QUEUED:
        return None
    moment = start_at(migration)
    if moment is not None and moment > (at or now()):
        return moment
    return None


def window(migration):
    """(start, end) of the migration's cutover window, or None."""
    value = (migration.get("options") or {}).get("cutover_window")
    if not value:
        return None
    return (parse_time(value["start"], "cutover_window start"),
            parse_time(value["end"], "cutover_window end"))
