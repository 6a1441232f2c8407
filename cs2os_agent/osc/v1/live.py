"""--live-fallback (import, and a plan's defaults): with --mode live, a
refusal of live mode (data disks, RBD, a manual cutover...) switches the
migration to warm mode instead of failing it."""


def add_arguments(parser):
    parser.add_argument(
        "--live-fallback", action="store_true", default=None,
        help="With --mode live: if live mode is refused for this VM, fall "
        "back to warm mode (recorded in an event and the result) instead "
        "of failing")


def fields(parsed_args):
    """{"live_fallback": True} when given, else {"live_fallback": None}."""
    return {"live_fallback": getattr(parsed_args, "live_fallback", None)}
