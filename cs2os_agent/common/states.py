"""The states a migration record goes through; no dependencies, so the API,
the CLI and the conductor all read the one list.

    queued -> running -> succeeded
                      -> rolling_back -> failed | cancelled
    running -> cancelling -> rolling_back -> cancelled
    queued -> cancelled (nothing was done yet)

``rolling_back`` is recorded before the first undo step, so a conductor
that takes over an interrupted rollback finishes the rollback and never
resumes the forward flow.  A migration whose migrated disk is committed
(the Nova server was asked to start on it) never rolls back: a failure
after that point ends ``succeeded`` with warnings, or ``failed`` with the
record saying it is committed (a retry then resumes the forward flow).
"""

QUEUED = "queued"
RUNNING = "running"
CANCELLING = "cancelling"
ROLLING_BACK = "rolling_back"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

# Some conductor owns (or will own) the migration: one per CloudStack VM.
ACTIVE = (QUEUED, RUNNING, CANCELLING, ROLLING_BACK)
FINAL = (SUCCEEDED, FAILED, CANCELLED)
ALL = ACTIVE + FINAL
