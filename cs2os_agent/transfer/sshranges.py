"""The ``ssh`` transport's remote command for byte ranges: many per connection.

Two requests read parts of a file rather than all of it from an offset on:
``read_ranges`` (a qcow2 file's tables: up to tens of thousands of small
ranges at random offsets) and a copy with ``skip`` (a few hundred ranges
in one stream, the snapshot data between them left out).  Every ssh
connection costs a key exchange and a login (0.1-0.3 s), so one remote
command reads many ranges: a shell function runs GNU dd on one range
(``iflag=skip_bytes,count_bytes``: offset and length in bytes, coreutils
8.16 and later), the command calls it once per range, joined with ``&&``
so a failure stops it, and ends with the file's stat on stderr like
:func:`cs2os_agent.transfer.ssh.copy_command` does, which tells whether
the file changed while it was read.  The ranges' bytes arrive on stdout one
after another, in the order given.

Each range is one dd process on the host (measured ~0.7 ms per range with
dash; ``env`` in front of each would double it, hence one ``export
LC_ALL=C`` for all of them).  The path is quoted once, into a variable.
sshd hands the command to the login shell as one ``-c`` argument, and Linux
refuses a single argument over 128 KiB (MAX_ARG_STRLEN): :func:`batches`
keeps every command of a ranged read under :data:`COMMAND_BUDGET`, and a
copy, limited to :data:`MAX_COPY_RANGES` ranges, stays under it too for any
realistic path and offsets (and under :data:`COMMAND_LIMIT` for any at
all, which :func:`command` checks).
"""

import shlex

from cs2os_agent.common import exception
from cs2os_agent.transfer import sshcmd

# The shell function that copies one range: "NAME OFFSET LENGTH".
READER = "cs2os_dd"
# dd's block: what it reads and writes at once (count_bytes shortens the
# last block of a range to what the range still holds).
BLOCK = 1024 * 1024
# Bytes of a command line: aimed at for a batch, and never exceeded.
COMMAND_BUDGET = 64 * 1024
COMMAND_LIMIT = 120 * 1024
# Bytes one connection of read_ranges brings (the whole answer is kept in
# memory, and a connection has connect + stall timeout to deliver it).
BATCH_BYTES = 64 * 1024 * 1024
# Ranges one copy may read (a copy is one connection, one command).
MAX_COPY_RANGES = 1024


def _prelude(path):
    return ('export LC_ALL=C; p=%s; %s() { dd bs=%d '
            'iflag=skip_bytes,count_bytes,fullblock status=none if="$p" '
            'skip="$1" count="$2" ; }; ' % (shlex.quote(path), READER, BLOCK))


def _stat(stat_format):
    return sshcmd.remote_command("stat", "-L", "-c", stat_format,
                                 "--") + ' "$p" >&2'


def _read(start, end):
    return "%s %d %d && " % (READER, int(start), int(end) - int(start))


def command(path, ranges, stat_format, shown=None):
    """The remote command that writes ``ranges`` of ``path`` to stdout.

    ``ranges``: ``(start, end)``, in the order their bytes are wanted;
    then the file's stat (``stat -L -c stat_format``) goes to stderr.
    """
    text = "%s%s%s" % (_prelude(path), "".join(
        _read(start, end) for start, end in ranges), _stat(stat_format))
    if len(text) > COMMAND_LIMIT:
        raise exception.InvalidSource(
            source=shown or path, reason="the command reading %d ranges "
            "would be %d bytes long, over the %d a command may have"
            % (len(ranges), len(text), COMMAND_LIMIT))
    return text


def batches(path, pieces, stat_format, budget=COMMAND_BUDGET,
            max_bytes=BATCH_BYTES):
    """Split ``pieces`` (``(start, end)``) into the ranges of commands.

    Each batch's command stays under ``budget`` characters and brings at
    most ``max_bytes`` (a single longer piece makes a batch of its own).
    """
    fixed = len(_prelude(path)) + len(_stat(stat_format))
    batch, length, nbytes = [], fixed, 0
    for start, end in pieces:
        cost = len(_read(start, end))
        if batch and (length + cost > budget
                      or nbytes + end - start > max_bytes):
            yield batch
            batch, length, nbytes = [], fixed, 0
        batch.append((start, end))
        length += cost
        nbytes += end - start
    if batch:
        yield batch
