"""Known warnings the docs build lets pass, each with its reason and fix.

oslo.config and oslo.policy parse option and policy help as
reStructuredText and meant a broken help text to warn without failing a
``-W`` build (``sphinx.util.logging.skip_warningiserror``); Sphinx 8 made
that a no-op, so one such text fails the whole build. This filter lets
through exactly the warnings listed below, by page and message, and keeps
every other warning an error. Each entry names the text to fix; once it is
fixed, delete the entry (an entry that matched nothing is reported at the
end of the build, so a stale one does not linger unnoticed).
"""

import logging

from sphinx.util import logging as sphinx_logging

# (page, message start, what to fix)
KNOWN = []

LOG = sphinx_logging.getLogger(__name__)


class _KnownWarnings(logging.Filter):
    def __init__(self):
        super().__init__()
        self.matched = set()

    def filter(self, record):
        if record.levelno < logging.WARNING:
            return True
        location = str(getattr(record, "location", "") or "")
        message = str(record.msg)
        for index, (page, start, _fix) in enumerate(KNOWN):
            if page in location and message.startswith(start):
                self.matched.add(index)
                return False
        return True


def setup(app):
    known = _KnownWarnings()
    for handler in logging.getLogger(sphinx_logging.NAMESPACE).handlers:
        if isinstance(handler, sphinx_logging.WarningStreamHandler):
            # First, before Sphinx counts the warning (WarningSuppressor).
            handler.filters.insert(0, known)

    def report(app, exception):
        for index, (page, start, fix) in enumerate(KNOWN):
            state = "let through" if index in known.matched else (
                "no longer seen: delete its entry in " + __name__)
            LOG.info("known warning on %s (%s...): %s; %s",
                     page, start, state, fix)

    app.connect("build-finished", report)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
