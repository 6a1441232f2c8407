"""What a running migration's steps share: its record and the clients.

Every change goes to the database at once (``save``/``resource``), so a
conductor that dies between two lines resumes from what is recorded.
"""

import threading

from oslo_log import log as logging

from cs2os_agent.common import exception

LOG = logging.getLogger(__name__)


class FlowContext:
    def __init__(self, migration, db, conf, clients, notifier=None):
        self.migration = migration
        self.db = db
        self.conf = conf
        self.clients = clients
        self.notifier = notifier
        self.admin_context = clients.admin_context
        self._cancel = threading.Event()
        self._stop = threading.Event()

    @property
    def id(self):
        return self.migration["id"]

    @property
    def resources(self):
        return self.migration["resources"]

    def save(self, **values):
        updated = self.db.update_migration(self.id, values)
        self.migration.update(updated)

    def resource(self, **values):
        """Record what a step created or changed, before relying on it."""
        self.save(resources=dict(self.resources, **values))

    def result(self, **values):
        self.save(result=dict(self.migration["result"], **values))

    def progress(self, progress):
        """A progress report: from the agent's casts or our own copies."""
        self.save(bytes_done=progress["bytes_done"],
                  bytes_total=progress["bytes_total"],
                  rate_bps=progress["rate_bps"])

    def event(self, step, message, kind="info"):
        LOG.info("Migration %s %s: %s", self.id, step, message)
        self.db.add_event(self.id, step, kind, message)

    def request_cancel(self):
        self._cancel.set()

    def request_stop(self):
        """The conductor is shutting down: end after this step, no
        rollback; the record stays running for the next conductor."""
        self._stop.set()

    @property
    def stop_requested(self):
        return self._stop.is_set()

    def check_cancelled(self, step):
        # The cancel may have reached another conductor: the record says.
        if not self._cancel.is_set():
            state = self.db.get_migration(self.id)["state"]
            if state == "cancelling":
                self._cancel.set()
        if self._cancel.is_set():
            raise exception.MigrationCancelled(migration_id=self.id,
                                               step=step)
