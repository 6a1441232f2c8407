"""A live migration's record on the agent: what an undo or a retry needs.

One JSON file per migration in ``[live] run_dir``, replaced atomically:

- ``hop``: the first hop's result (the temporary domain's name and UUID,
  A's name, disks, formats and file paths on the KVM host), so that a
  restarted agent can still hop the guest back (:func:`.hop.hop_back`)
  and a repeated ``live_hop`` returns what the first call did;
- ``hop_back``: the undo's result, once it ran;
- ``move``: the same-host move's outcome (``running``, ``aborted``,
  ``expired``, ``failed``, ``incomplete``, ``refused``), its result or
  error, so that ``finish_live_move`` called again returns the same.

:func:`forget` removes it at the migration's end.

The directory is made 0711: QEMU reaches the move's socket directory
inside it (:mod:`.move`); the files are the agent's alone (0600).
"""

import hashlib
import json
import os

from cs2os_agent.common import fileutils


def ensure_dir(run_dir):
    os.makedirs(run_dir, mode=0o711, exist_ok=True)
    # A's QEMU (another user) walks through it to the move's socket.
    os.chmod(run_dir, 0o711)  # noqa: S103
    return run_dir


def path(run_dir, migration_id):
    """A name from the migration id that cannot walk out of run_dir."""
    digest = hashlib.sha256(str(migration_id).encode()).hexdigest()[:16]
    return os.path.join(run_dir, "live-%s.json" % digest)


def load(run_dir, migration_id):
    """The record, or {} (none yet, or another migration's)."""
    try:
        with open(path(run_dir, migration_id)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or \
            record.get("migration_id") != migration_id:
        return {}
    return record


def update(run_dir, migration_id, **sections):
    """Set (or, with None, drop) sections of the record; returns it."""
    record = load(run_dir, migration_id)
    record["migration_id"] = migration_id
    for name, value in sections.items():
        if value is None:
            record.pop(name, None)
        else:
            record[name] = value
    ensure_dir(run_dir)
    name = path(run_dir, migration_id)
    old = os.umask(0o077)
    try:
        fileutils.write_json_atomic(name, record)
    finally:
        os.umask(old)
    fileutils.fsync_dir(run_dir)
    return record


def forget(run_dir, migration_id):
    """Remove the record once no call can need it: no hop to undo (never
    made, or hopped back), or the guest runs in Nova's domain.  The
    agent's cleanup (after the commit) and restore_disk (a rollback's,
    after the hop back) call it.  Returns whether a record went."""
    record = load(run_dir, migration_id)
    if not record:
        return False
    moved = (record.get("move") or {}).get("outcome") == "running"
    if record.get("hop") is not None and not moved:
        return False  # the temporary domain may still hold the guest
    try:
        os.unlink(path(run_dir, migration_id))
    except FileNotFoundError:
        return False
    fileutils.fsync_dir(run_dir)
    return True
