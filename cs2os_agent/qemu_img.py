"""Small argv-building wrappers around ``qemu-img``.

Every call names the image format explicitly (``-f``, and ``-F`` for a
backing file): letting qemu-img probe a format is how a guest-written raw
disk gets read as qcow2 with a backing file of the attacker's choosing.
Output is ``--output=json`` wherever qemu-img offers it.  Every run is
resource-limited (util-linux ``prlimit``): see :data:`QEMU_IMG_LIMITS` and
:func:`data_limits`.

Failures surface as :mod:`cs2os_agent.common.exception` types; no caller
ever needs to parse qemu-img's stderr.
"""

import functools
import json
import math
import shutil
import signal

from oslo_concurrency import processutils
from oslo_log import log as logging

from cs2os_agent.common import exception

LOG = logging.getLogger(__name__)

QEMU_IMG = "qemu-img"

MiB = 1024**2
GiB = 1024**3

# Every qemu-img run here may read data that came from CloudStack (an
# overlay, a template, a mirror target filled by the source host), so every
# one runs under limits: _execute applies these unless a command passes its
# own.  No command has a reason to run unlimited.
#
# Commands that parse a header and metadata but read no guest data (info,
# check, map, create, rebase -u, resize): Nova's QEMU_IMG_LIMITS for
# qemu-img info, 1 GiB of address space and 30 s of CPU, so a crafted
# header cannot make qemu-img eat the host's memory or spin forever.  No
# core file: a qemu-img that crashes under its limit must not leave a core
# of up to that size in the service's working directory.
QEMU_IMG_LIMITS = processutils.ProcessLimits(
    address_space=1 * GiB, cpu_time=30, core_file_size=0)

# Commands that read every guest byte (convert, compare).  Address space:
# ironic's for qemu-img convert ([disk_utils] image_convert_memory_limit,
# 2 GiB).  Measured here at a 600-670 MiB peak for both: 8 threads, each
# with an 8 MiB stack and a 64 MiB malloc arena reserved; their number
# follows the requests in flight (convert's -m 8), not the host's cores.
DATA_ADDRESS_SPACE = 2 * GiB
# CPU: Nova's 30 s (DATA_CPU_SECONDS), plus one second per this many
# bytes the command reads.
# Measured here (2 vCPUs, page cache): convert of zlib-compressed clusters
# to raw 120-220 MiB per CPU second (user + system), compare 180 MiB/s; a
# legitimate run stays ~8x below its cap on a slower or busier host, while
# a crafted image that makes qemu-img loop still stops.
DATA_CPU_SECONDS = 30
DATA_BYTES_PER_CPU_SECOND = 16 * MiB


def data_limits(nbytes, max_output=None):
    """Limits for a command that reads ``nbytes`` of guest data.

    ``max_output``: RLIMIT_FSIZE, the largest length any file it writes
    may reach (qemu-img is stopped with "File too large" or SIGXFSZ).
    """
    cpu = DATA_CPU_SECONDS + math.ceil(
        max(0, nbytes) / DATA_BYTES_PER_CPU_SECOND)
    return processutils.ProcessLimits(
        address_space=DATA_ADDRESS_SPACE, cpu_time=cpu, core_file_size=0,
        file_size=max_output)


# Enough of stderr to say what went wrong without flooding logs or RPC.
_STDERR_TAIL = 2000

# qemu-img check exit codes (see qemu-img(1)).
_CHECK_CORRUPT = 2
_CHECK_LEAKS_ONLY = 3
# qemu-img compare: 0 identical, 1 different, >= 2 error.
_COMPARE_DIFFER = 1


@functools.cache
def _prlimit_binary():
    """util-linux's ``prlimit`` (every Linux has it), or None."""
    return shutil.which("prlimit")


def limited_argv(args, prlimit):
    """*args* run under the resource limits *prlimit*, or None.

    util-linux's ``prlimit`` sets the limits and execs the command (one
    short-lived C program), where ``processutils.execute(prlimit=...)``
    starts a Python interpreter to do the same: ~25 ms per call idle and
    more on a loaded node, three times per staged overlay (measured).
    ProcessLimits' option names are the ``prlimit`` program's; both set
    the soft and the hard limit.  None when the program is missing: the
    caller then falls back to oslo's Python wrapper.
    """
    binary = _prlimit_binary()
    if binary is None:
        return None
    return [binary, *prlimit.prlimit_args(), "--", *args]


def _run(args, prlimit=None):
    """Run one command and return its stdout (str).

    The only place a process is started, so unit tests patch this.
    Raises ``ProcessExecutionError`` on a non-zero exit and ``OSError``
    when the program cannot be started.
    """
    if prlimit is not None:
        argv = limited_argv(args, prlimit)
        if argv is not None:
            args, prlimit = argv, None
    stdout, _stderr = processutils.execute(*args, prlimit=prlimit)
    return stdout


def _error(command, exc, prlimit=None):
    limit = prlimit.file_size if prlimit is not None else None
    # RLIMIT_FSIZE: SIGXFSZ kills qemu-img (subprocess restores its default
    # action), or where it is ignored the write or truncate fails: EFBIG.
    if limit is not None and (exc.exit_code == -signal.SIGXFSZ
                              or "File too large" in (exc.stderr or "")):
        return exception.QemuImgOutputTooLarge(
            command=command, limit=limit,
            reason=(exc.stderr or "").strip()[-_STDERR_TAIL:]
            or "killed by SIGXFSZ",
        )
    if exc.exit_code in (-signal.SIGXCPU, -signal.SIGKILL):
        # The prlimit CPU cap (or an operator) stopped it: say so rather
        # than report a meaningless exit code.
        return exception.QemuImgTimeout(
            command=command,
            reason="killed by %s" % signal.Signals(-exc.exit_code).name,
        )
    return exception.QemuImgError(
        command=command,
        exit_code=exc.exit_code,
        stderr=(exc.stderr or "").strip()[-_STDERR_TAIL:],
    )


def _execute(args, prlimit=None, passthrough=()):
    """Run qemu-img with *args* and return its stdout.

    *prlimit*: the command's limits; None means QEMU_IMG_LIMITS (looked
    up now, not at import), so there is no way to run one unlimited.  A
    command that reads guest data passes :func:`data_limits`.  Raises
    QemuImgError, except that a ProcessExecutionError whose exit code is
    in *passthrough* is re-raised for the caller to interpret.
    """
    if prlimit is None:
        prlimit = QEMU_IMG_LIMITS
    try:
        return _run([QEMU_IMG, *args], prlimit=prlimit)
    except processutils.ProcessExecutionError as e:
        if e.exit_code in passthrough:
            raise
        raise _error(args[0], e, prlimit) from e
    except OSError as e:
        raise exception.QemuImgError(command=args[0], exit_code=None,
                                     stderr=str(e)) from e


def convert(path, fmt, dest, dest_fmt, virtual_size=None, max_output=None):
    """Write ``path``'s guest view to ``dest`` as ``dest_fmt``.

    Runs under :func:`data_limits` for ``path``'s virtual size
    (``virtual_size`` if the caller has it, else from ``qemu-img info``);
    ``max_output`` bounds the length ``dest`` may reach
    (QemuImgOutputTooLarge past it).
    """
    if virtual_size is None:
        virtual_size = info(path, fmt)["virtual-size"]
    _execute(["convert", "-f", fmt, "-O", dest_fmt, path, dest],
             prlimit=data_limits(virtual_size, max_output))


def convert_into(path, fmt, target, target_fmt, objects, virtual_size,
                 target_is_zero=False, out_of_order=False):
    """Write ``path``'s guest view into the existing ``target`` (a path
    or ``json:`` name; ``objects``: ``--object`` arguments it needs).
    ``target_is_zero``: it reads as zeros now (a new volume), so zeros
    and holes are skipped, not written.  ``out_of_order``: ``-W``, the
    requests in flight may also write out of order: into RBD 1.04-1.08x
    ``rbd import`` with it, 0.69-0.70x without (tools/bench_volumes.py);
    only for targets where order fragments nothing (RBD, block devices),
    not files."""
    args = ["convert", *objects, "-n", "-f", fmt, "-O", target_fmt]
    if target_is_zero:
        args.append("--target-is-zero")
    if out_of_order:
        args.append("-W")
    _execute(args + [path, target], prlimit=data_limits(virtual_size))


def target_size(target, fmt, objects):
    """The virtual size of ``target`` (opened as :func:`convert_into`
    does)."""
    return json.loads(_execute(["info", *objects, "--output=json", "-f", fmt,
                                target]))["virtual-size"]


def compare_with_objects(left, left_fmt, right, right_fmt, objects, reads):
    """:func:`compare` for a ``right`` opened with ``objects`` (``reads``:
    both guest views' bytes)."""
    _compare(["compare", *objects, "-f", left_fmt, "-F", right_fmt, left,
              right], left, right, reads)


def _compare(args, left, right, reads):
    """Run ``qemu-img <args>`` (a compare) under the limits for ``reads``
    guest bytes; ImagesDiffer when they differ."""
    try:
        _execute(args, prlimit=data_limits(reads),
                 passthrough=(_COMPARE_DIFFER,))
    except processutils.ProcessExecutionError as e:
        # stdout is qemu-img's verdict, e.g. "Content mismatch at offset
        # 1048576!", after "Warning: Image size mismatch!" if sizes differ.
        detail = " ".join((e.stdout or "").splitlines()).strip()
        raise exception.ImagesDiffer(left=left, right=right,
                                     detail=detail) from e


def info(path, fmt, backing_chain=False, force_share=False):
    """Return ``qemu-img info`` as a dict (a list of dicts, top first,
    with *backing_chain*).

    Keys are qemu-img's own (``virtual-size``, ``backing-filename``,
    ``backing-filename-format``, ``format-specific``...).  Without
    *backing_chain* the backing file is not opened, so it may be absent.
    With it, a layer whose header records no backing format has its
    backing file's format probed by qemu-img: check
    ``backing-filename-format`` before trusting the chain.
    """
    args = ["info", "--output=json", "-f", fmt]
    if backing_chain:
        args.append("--backing-chain")
    if force_share:
        args.append("-U")
    args.append(path)
    return json.loads(_execute(args))


def create(path, fmt, size=None, backing_file=None, backing_fmt=None):
    """Create an image of *size* bytes, or an overlay on *backing_file*.

    Without *size*, an overlay takes its backing file's virtual size.
    qemu-img opens the backing file either way, so it must exist.
    """
    args = ["create", "-f", fmt]
    if backing_file is not None:
        if not backing_fmt:
            raise ValueError("backing_fmt is required with backing_file")
        args += ["-b", backing_file, "-F", backing_fmt]
    args.append(path)
    if size is not None:
        args.append(str(int(size)))
    _execute(args)


def rebase(path, fmt, backing_file, backing_fmt, unsafe=True, reads=None):
    """Point *path* at *backing_file* (``None``: no backing file).

    With *unsafe* (the default) only the header changes: the caller
    guarantees the new backing file has the same guest-visible content.
    Without it qemu-img writes into *path* every cluster where the old
    backing chain and the new backing file differ; *reads*, the guest
    bytes that may take (both chains' views), runs it under
    :func:`data_limits` instead of the header-only limits.
    """
    args = ["rebase", "-f", fmt]
    if unsafe:
        args.append("-u")
    if backing_file is None:
        args += ["-b", ""]
    else:
        args += ["-b", backing_file, "-F", backing_fmt]
    args.append(path)
    _execute(args, prlimit=None if reads is None else data_limits(reads))


def check(path, fmt):
    """Return ``qemu-img check`` as a dict.

    Leaked clusters alone waste space but harm no data, so they are only
    logged.  Raises ImageCorrupt when qemu-img finds corruptions, and
    QemuImgError when the check cannot run or complete (including
    formats without checks, such as raw: exit code 63).
    """
    args = ["check", "--output=json", "-f", fmt, path]
    passthrough = (_CHECK_CORRUPT, _CHECK_LEAKS_ONLY)
    try:
        return json.loads(_execute(args, passthrough=passthrough))
    except processutils.ProcessExecutionError as e:
        exit_code = e.exit_code
        # Exits 2 and 3 still print the JSON report on stdout.
        try:
            result = json.loads(e.stdout or "")
        except ValueError:
            raise _error("check", e) from e
    if exit_code == _CHECK_CORRUPT:
        raise exception.ImageCorrupt(
            path=path,
            reason="%s corruptions, %s leaked clusters"
            % (result.get("corruptions", 0), result.get("leaks", 0)),
        )
    LOG.warning("Image %s has %s leaked clusters (harmless)",
                path, result.get("leaks", 0))
    return result


def compare(left, right, left_fmt, right_fmt, strict=False,
            force_share=False):
    """Return None if both images show the guest the same content.

    Raises ImagesDiffer (``detail`` names the first mismatch) when they
    differ, QemuImgError when either cannot be read.  Without *strict*,
    an image's extra tail counts as equal if it reads as zeros.
    """
    args = ["compare", "-f", left_fmt, "-F", right_fmt]
    if strict:
        args.append("-s")
    if force_share:
        args.append("-U")
    args += [left, right]
    # It reads both guest views whole: its CPU cap follows their sizes.
    read = sum(info(path, fmt, force_share=force_share)["virtual-size"]
               for path, fmt in ((left, left_fmt), (right, right_fmt)))
    _compare(args, left, right, read)


def images_equal(left, right, left_fmt, right_fmt, strict=False,
                 force_share=False):
    """Like :func:`compare`, but return False instead of raising
    ImagesDiffer."""
    try:
        compare(left, right, left_fmt, right_fmt, strict=strict,
                force_share=force_share)
    except exception.ImagesDiffer:
        return False
    return True


def map(path, fmt, force_share=False):  # noqa: A001
    """Return ``qemu-img map`` extents (dicts with start, length, depth,
    present, zero, data and, for data, offset), covering the whole
    virtual size in order.  ``depth`` 0 is *path* itself."""
    args = ["map", "--output=json", "-f", fmt]
    if force_share:
        args.append("-U")
    args.append(path)
    return json.loads(_execute(args))


def resize(path, fmt, size):
    """Set the virtual size to *size* bytes; shrinking is refused by
    qemu-img (QemuImgError)."""
    _execute(["resize", "-f", fmt, path, str(int(size))])


def allocated_bytes(path, fmt):
    """Return how many guest bytes the top layer of *path* stores data
    for; zeroed clusters (``data`` false) and backing content don't
    count."""
    return sum(
        extent["length"]
        for extent in map(path, fmt)
        if extent.get("data") and extent.get("depth") == 0
    )



def snapshot_delete(path, fmt, name):
    """Delete the internal snapshot named *name* (qemu-img finds it by
    name; with several of that name, the first); its clusters are freed,
    not read.  The backing file is not opened (``backing: null``): it
    may be a path that exists only on another host."""
    spec = {"driver": fmt, "backing": None,
            "file": {"driver": "file", "filename": path}}
    _execute(["snapshot", "-d", name, "json:" + json.dumps(spec)])
