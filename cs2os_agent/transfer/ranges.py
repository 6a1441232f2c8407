"""Byte ranges of a source file: what a ranged read or a skipping copy moves.

Two requests of the transports take ranges (see base.OverlaySource):
``read_ranges`` reads ``(offset, length)`` pieces of the file at random
places (a qcow2 file's metadata), and ``copy_to``/``bytes_to_copy`` take
``skip``, sorted ``(start, end)`` ranges that are neither read nor written
(they stay holes in the copy).  What every transport needs of them is
here: checking them, the ranges a copy wants (the complement of ``skip``),
merging the pieces of a read so fewer requests go out, and cutting the
answers back into the pieces asked for.
"""

import bisect

from cs2os_agent.common import exception


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_ranges(ranges):
    """``ranges`` as a list of ``(offset, length)``; ValueError if bad."""
    checked = []
    for item in ranges:
        try:
            offset, length = item
        except (TypeError, ValueError):
            raise ValueError("a range is (offset, length), not %r"
                             % (item,)) from None
        if not (_int(offset) and _int(length)) or offset < 0 or length < 0:
            raise ValueError("a range is (offset, length), two integers "
                             ">= 0, not %r" % (item,))
        checked.append((offset, length))
    return checked


def check_within(ranges, size, shown):
    """SourceUnreadable naming the first range that ends past ``size``."""
    for offset, length in ranges:
        if offset + length > size:
            raise exception.SourceUnreadable(
                path=shown, reason="the range of %d bytes at offset %d "
                "(bytes %d-%d) reaches past the end of the file (%d bytes)"
                % (length, offset, offset, offset + length - 1, size))


def check_skip(skip):
    """``skip`` as a tuple of ``(start, end)``: sorted, apart, not empty.

    Ranges may touch (one's end is the next one's start) but not overlap.
    """
    checked = []
    previous = 0
    for item in skip:
        try:
            start, end = item
        except (TypeError, ValueError):
            raise ValueError("a skipped range is (start, end), not %r"
                             % (item,)) from None
        if not (_int(start) and _int(end)) or not 0 <= start < end:
            raise ValueError("a skipped range is (start, end), integers "
                             "with 0 <= start < end, not %r" % (item,))
        if start < previous:
            raise ValueError("skipped ranges must be sorted and must not "
                             "overlap: %r after one ending at %d"
                             % (item, previous))
        previous = end
        checked.append((start, end))
    return tuple(checked)


def wanted(offset, size, skip):
    """The ``(start, end)`` ranges of [offset, size) outside ``skip``.

    ``skip`` as :func:`check_skip` returns it; the result is sorted, its
    ranges are never empty and never touch.
    """
    out = []
    position = offset
    for start, end in skip:
        if end <= position:
            continue
        if start >= size:
            break
        if start > position:
            out.append((position, start))
        position = end
    if position < size:
        out.append((position, size))
    return out


def total(ranges):
    """The bytes in ``(start, end)`` ranges."""
    return sum(end - start for start, end in ranges)


def coalesce(ranges, max_piece=None):
    """``(offset, length)`` ranges as few sorted ``(start, end)`` pieces.

    Overlapping and adjacent ranges become one piece; empty ones vanish.
    ``max_piece``: no piece is longer (a long one is cut in several).
    """
    merged = []
    for offset, length in sorted(ranges):
        if length == 0:
            continue
        end = offset + length
        if merged and offset <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1][1] = end
        else:
            merged.append([offset, end])
    if max_piece is None:
        return [(start, end) for start, end in merged]
    return [(pos, min(pos + max_piece, end))
            for start, end in merged
            for pos in range(start, end, max_piece)]


def extract(pieces, ranges):
    """The bytes of each ``(offset, length)`` of ``ranges``, in order.

    ``pieces``: sorted ``(start, data)`` that together hold every range
    (as :func:`coalesce` made them); a range may span adjacent pieces.
    """
    starts = [start for start, _ in pieces]
    out = []
    for offset, length in ranges:
        i = bisect.bisect_right(starts, offset) - 1
        parts = []
        position, end = offset, offset + length
        while position < end:
            start, data = pieces[i]
            if not start <= position < start + len(data):
                raise ValueError("no piece holds byte %d" % position)
            take = min(end, start + len(data)) - position
            parts.append(data[position - start:position - start + take])
            position += take
            i += 1
        out.append(b"".join(parts))
    return out
