"""Small file-system steps whose failure modes matter."""

import json
import os


def _fsync_path(path, flags):
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path):
    """Make renames and unlinks in ``path`` durable."""
    _fsync_path(path, os.O_RDONLY | os.O_DIRECTORY)


def fsync_file(path):
    """Make what others wrote into ``path`` durable (fsync needs no write
    access)."""
    _fsync_path(path, os.O_RDONLY)


def remove_if_exists(path):
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def write_json_atomic(path, data):
    """Replace ``path`` with ``data`` as JSON: readers see old or new, never
    half a file, and the new content is durable before it is visible."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
