"""What a running migration's steps share: its record and the clients.

Every change goes to the database at once (``save``/``resource``), so a
conductor that dies between two lines resumes from what is recorded.

Fencing: a context made by the engine carries its claim (conductor name,
epoch).  Every write names that claim in the same UPDATE, and ``guard()``
proves it again (by extending the lease at that epoch) before a side
effect, so a conductor whose lease lapsed and was taken over (paused, cut
off from the database) raises LeaseLost instead of acting a second time.
"""

import datetime
import threading

from oslo_log import log as logging
from oslo_utils import timeutils

from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor.flow import resources
from cs2os_agent.openstack import volumes as openstack_volumes

LOG = logging.getLogger(__name__)


class FlowContext:
    def __init__(self, migration, db, conf, clients, notifier=None,
                 owner=None):
        """``owner``: (conductor, epoch) of the claim the engine made;
        None (unit tests of single steps) writes without fencing."""
        self.migration = migration
        self.db = db
        self.conf = conf
        self.clients = clients
        self.notifier = notifier
        self.admin_context = clients.admin_context
        self.owner = owner
        self._cancel = threading.Event()
        self._stop = threading.Event()
        self._fenced = threading.Event()
        # Set by a warm flow's mirror step: this run saw the job READY.
        self.mirror_watched = False

    @property
    def id(self):
        return self.migration["id"]

    @property
    def resources(self):
        """What the steps created or changed (conductor/flow/resources.py
        declares every key)."""
        return resources.Resources(self.migration["resources"])

    @property
    def openstack(self):
        """Nova (servers) as cs2os in the migration's target project; the
        service-wide client (Glance templates, flavors, hosts) is
        ``clients.openstack``."""
        return self.clients.in_project(
            self.migration.get("target_project_id"))[0]

    @property
    def network(self):
        """Neutron (ports) as cs2os in the migration's target project."""
        return self.clients.in_project(
            self.migration.get("target_project_id"))[1]

    @property
    def volumes(self):
        """Cinder (and Nova's volume attachments) as cs2os in the
        migration's target project."""
        return openstack_volumes.VolumeClient(
            self.openstack.conn,
            wait_timeout=self.conf.conductor.wait_timeout)

    @property
    def committed(self):
        return bool(self.migration.get("committed")
                    or self.resources.get("committed"))

    # -- fencing -------------------------------------------------------------

    def claim(self):
        """What a write must still match ({conductor, lease_epoch}) to be
        this flow's, None outside an engine's claim."""
        return self._expect()

    def _expect(self):
        if self.owner is None:
            return None
        return {"conductor": self.owner[0], "lease_epoch": self.owner[1]}

    def _lost(self):
        self._fenced.set()
        return exception.LeaseLost(conductor=self.owner[0],
                                   migration_id=self.id, epoch=self.owner[1])

    def fence(self):
        """The engine found the claim gone: act no more."""
        self._fenced.set()

    def guard(self):
        """Before a side effect: prove this conductor still holds the
        migration (its lease extended at its epoch), else LeaseLost."""
        if self.owner is None:
            return
        if self._fenced.is_set():
            raise self._lost()
        lease = self.conf.conductor.lease_seconds
        until = timeutils.utcnow() + datetime.timedelta(seconds=lease)
        if not self.db.renew(self.id, self.owner[0], self.owner[1], until):
            raise self._lost()

    # -- the record ----------------------------------------------------------

    def save(self, expect=None, **values):
        """Write ``values``; with ``expect`` ({column: value}) only if the
        row still matches, returning False if it did not."""
        if self._fenced.is_set():
            raise self._lost()
        wanted = dict(self._expect() or {}, **(expect or {}))
        updated = self.db.update_migration(self.id, values,
                                           expect=wanted or None)
        if updated is None:
            if self.owner is not None and not self._still_ours():
                raise self._lost()
            return False
        self.migration.update(updated)
        return True

    def _still_ours(self):
        row = self.db.get_migration(self.id)
        return (row["conductor"], row["lease_epoch"]) == tuple(self.owner)

    def resource(self, **values):
        """Record what a step created or changed, before relying on it."""
        resources.check(values)
        self.save(resources=dict(self.migration["resources"], **values))

    def result(self, **values):
        self.save(result=dict(self.migration["result"], **values))

    def warn(self, step, message):
        """Something left behind after the commit: the migration still
        succeeds, and the record names what needs a look."""
        warnings = list(self.migration["result"].get("warnings") or [])
        warnings.append({"step": step, "message": message})
        self.result(warnings=warnings)
        self.event(step, message, kind="warning")

    def commit(self):
        """The point of no return, recorded before the Nova server is
        asked to start on the migrated disk: from here on the CloudStack
        VM is never started again and nothing is rolled back.

        Compare-and-set against a cancel: a cancel recorded first wins
        (MigrationCancelled, and the rollback runs); one that comes later
        is refused by the API (409).
        """
        if self.committed:
            return
        self.guard()
        if not self.save(expect={"state": states.RUNNING}, committed=True,
                         resources=dict(self.migration["resources"],
                                        committed=True)):
            raise exception.MigrationCancelled(migration_id=self.id,
                                               step=self.migration["step"])

    def uncommit(self):
        """Nova refused the start outright (StartRefused): it started
        nothing, so the commit recorded for that start is taken back and
        the rollback may run.  Nothing else acts meanwhile: a cancel is
        refused while committed, and the claim is this conductor's."""
        self.save(committed=False,
                  resources=dict(self.migration["resources"],
                                 committed=False))

    def progress(self, progress):
        """A progress report of the current step's copy (the template
        upload, the live mirror)."""
        self.save(bytes_done=progress["bytes_done"],
                  bytes_total=progress["bytes_total"],
                  rate_bps=progress["rate_bps"],
                  progress_step=self.migration.get("step"))

    def event(self, step, message, kind="info"):
        LOG.info("Migration %s %s: %s", self.id, step, message)
        if self._fenced.is_set():
            raise self._lost()
        if not self.db.add_event(self.id, step, kind, message,
                                 expect=self._expect()):
            raise self._lost()

    # -- cancel and shutdown -------------------------------------------------

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
        # Too late once committed: the guest is Nova's.
        if self.committed:
            return
        # The cancel may have reached another conductor: the record says.
        if not self._cancel.is_set():
            state = self.db.get_migration(self.id)["state"]
            if state == states.CANCELLING:
                self._cancel.set()
        if self._cancel.is_set():
            raise exception.MigrationCancelled(migration_id=self.id,
                                               step=step)
