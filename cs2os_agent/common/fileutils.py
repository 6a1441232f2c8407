"""Small file-system steps whose failure modes matter."""

import errno
import json
import mmap
import os

# O_DIRECT wants buffers, offsets and lengths aligned to the logical block
# size; 4 KiB covers every disk and file system in use.
_DIRECT_IO_BLOCK = 4096


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


def supports_direct_io(path):
    """Whether the existing file ``path`` can be read with O_DIRECT.

    Some file systems refuse O_DIRECT at open, others only at the first
    read or write (EINVAL either way), so the probe does both, as Nova's
    ``_supports_direct_io`` does.  Reading the head of the file changes
    nothing.  Errors other than EINVAL (a missing file, no permission) are
    raised: they name a real problem.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    try:
        # An anonymous mapping is page aligned, as O_DIRECT needs.
        with mmap.mmap(-1, _DIRECT_IO_BLOCK) as buf:
            os.preadv(fd, [buf], 0)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    finally:
        os.close(fd)
    return True


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
