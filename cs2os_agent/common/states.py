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

# -- how a migration moves the disk -------------------------------------------

COLD = "cold"    # the source stops, then its overlay is copied
WARM = "warm"    # the overlay is mirrored while the source runs
LIVE = "live"    # mirrored too, then the running guest moves into Nova
MODES = (COLD, WARM, LIVE)
DEFAULT_MODE = COLD

# When a warm migration cuts over: as soon as the mirror is ready, or when
# the operator asks (the cutover action).
AUTO = "auto"
MANUAL = "manual"
CUTOVERS = (AUTO, MANUAL)
DEFAULT_CUTOVER = AUTO

# How it cuts over: the guest shuts down and QEMU proves its last write
# reached the mirror, or the source is frozen and the job ended.
SHUTDOWN = "shutdown"
FORCE = "force"
CUTOVER_METHODS = (SHUTDOWN, FORCE)
DEFAULT_CUTOVER_METHOD = SHUTDOWN

# -- the steps of each flow, by name ------------------------------------------
# The conductor's flows (conductor/flow/cold.py, warm.py, live.py) run
# exactly these, in this order; the API, the CLI and the manager read them
# from here.

COLD_STEPS = ("validate", "image", "ports", "boot", "volumes",
              "stop_source", "sync", "sync_volumes", "swap", "start",
              "cleanup", "retire_source")
WARM_STEPS = ("validate", "image", "ports", "boot", "mirror", "ready",
              "cutover", "finish", "swap", "start", "stop_source", "cleanup",
              "retire_source")
LIVE_STEPS = ("validate", "image", "ports", "boot", "target", "hop", "move",
              "stop_source", "cleanup", "retire_source")
# The step a migration records when its flow is done.
DONE = "done"
# A warm migration's steps from the cutover on: too late to ask for one.
AFTER_CUTOVER = WARM_STEPS[WARM_STEPS.index("cutover"):] + (DONE,)
# Steps after the commit that only tidy up: a failure leaves a warning and
# the migration still succeeds (the guest runs in Nova).  A warm flow's
# stop_source runs after its commit (it stops the frozen source); a live
# flow's after the move (CloudStack catches up with a domain that left).
TIDY_STEPS = frozenset(("stop_source", "cleanup", "retire_source"))

# Where both flows start, and where a retry that is not committed starts
# again: a migration still at this step has done nothing to undo.
FIRST_STEP = "validate"
# The cold flow's copy: the agent runs it, so a cancel must reach the agent.
COPY_STEP = "sync"
# Every step whose work is an agent's copy: a cancel reaches the agent at
# once there, not only when the current disk's copy ends.
AGENT_COPY_STEPS = frozenset((COPY_STEP, "sync_volumes"))
