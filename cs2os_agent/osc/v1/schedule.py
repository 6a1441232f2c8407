"""Start times and cutover windows on the command line (import, and a
plan's defaults); the conductor checks the times (conductor/schedule.py)."""

from osc_lib import exceptions as osc_exc


def add_arguments(parser):
    """--start-at and the cutover window (import, and a plan's defaults)."""
    parser.add_argument(
        "--start-at", metavar="<time>",
        help="Start no earlier than this ISO 8601 time with its UTC offset "
        "(e.g. 2026-12-07T02:00:00Z); queued and cancellable until then")
    parser.add_argument(
        "--cutover-window-start", metavar="<time>",
        help="Warm only: hold the mirror READY until this ISO 8601 time, "
        "then cut over (with --cutover-window-end)")
    parser.add_argument(
        "--cutover-window-end", metavar="<time>",
        help="Warm only: the cutover must begin before this time, else the "
        "migration fails and the CloudStack VM keeps running")


def fields(parsed_args):
    """start_at and cutover_window from the parsed options (None when not
    given); a window needs both ends."""
    opens = parsed_args.cutover_window_start
    ends = parsed_args.cutover_window_end
    if (opens is None) != (ends is None):
        raise osc_exc.CommandError(
            "--cutover-window-start and --cutover-window-end go together")
    return {"start_at": parsed_args.start_at,
            "cutover_window": {"start": opens, "end": ends}
            if opens is not None else None}
