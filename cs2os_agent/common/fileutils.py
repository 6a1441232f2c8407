"""Small file-system steps whose failure modes matter."""

import os


def fsync_dir(path):
    """Make renames and unlinks in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_if_exists(path):
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
