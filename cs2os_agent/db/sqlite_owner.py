"""One cs2os-conductor per SQLite database file.

Several conductors are safe on one MySQL/MariaDB or PostgreSQL database
(leases, slots), not on one SQLite file: a second conductor there would
wait on the other's writes and the file is local to one host anyway.  A
conductor on SQLite holds an exclusive lock on a file next to the
database (``<database>.conductor-lock``, holding its pid) for as long as it
runs; a second one finds it held and refuses to start, naming the first.
The kernel drops the lock when the process ends, however it ends (even
SIGKILL), so a stale lock file never keeps a conductor from starting.
cs2os-api, cs2os-status and cs2os-manage do not take it: they may share
the file with the conductor.
"""

import fcntl
import os

import sqlalchemy as sa

LOCK_SUFFIX = ".conductor-lock"


class SQLiteOwnedError(Exception):
    """Another cs2os-conductor holds this SQLite database."""

    def __init__(self, path, pid):
        self.path, self.pid = path, pid
        super().__init__(
            "another cs2os-conductor (pid %s) owns SQLite database %s; "
            "several conductors need MySQL/MariaDB or PostgreSQL: set "
            "[database] connection" % (pid or "unknown", path))


def sqlite_file(url):
    """The absolute path of a SQLite URL's file; None for another database
    or an in-memory one (which nobody else can open)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:") or \
            parsed.database.startswith("file:"):
        return None
    # One file however it is spelled (relative, through a symlink).
    return os.path.realpath(parsed.database)


def own(url):
    """Hold the database of ``url`` for this process's lifetime.

    Returns the open lock file (keep it: closing it lets go), or None when
    ``url`` is not a SQLite file.  Raises SQLiteOwnedError when another
    process holds it.
    """
    path = sqlite_file(url)
    if path is None:
        return None
    lock = open(path + LOCK_SUFFIX, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        raise SQLiteOwnedError(path, holder) from None
    except BaseException:
        lock.close()
        raise
    # Who holds it, for the refusal above (and an operator's look).
    lock.seek(0)
    lock.truncate()
    lock.write("%d\n" % os.getpid())
    lock.flush()
    return lock
