"""The interface every overlay transport implements."""

import abc


class OverlaySource(abc.ABC):
    """One CloudStack overlay file that can be copied onto this node.

    A transport is built from the ``source`` dict of a ``sync_overlay``
    request by :func:`cs2os_agent.transfer.get_source`, which has already
    rejected malformed requests.  Implementations must move only the bytes
    the file really holds, keep memory use independent of the file size and
    call ``monitor.advance(n)`` after every chunk.
    """

    transport = None

    @abc.abstractmethod
    def describe(self):
        """A short description for logs and errors; never a secret."""

    @abc.abstractmethod
    def fingerprint(self):
        """JSON-serialisable identity of the file's current content.

        Two calls return equal dicts only if a copy made after the first
        would still be a copy of the file at the second.
        """

    @abc.abstractmethod
    def read_header(self, nbytes):
        """The first ``nbytes`` bytes (fewer if the file is shorter)."""

    @abc.abstractmethod
    def read_ranges(self, ranges):
        """The bytes of each ``(offset, length)`` of ``ranges``, in order.

        A list of ``bytes``, one per range, each exactly ``length`` long;
        the ranges may come in any order, overlap or touch.  A range that
        reaches past the end of the file raises SourceUnreadable naming
        it (never a short answer); the transport's errors are those of
        :meth:`read_header`.
        """

    @abc.abstractmethod
    def size(self):
        """The file's size in bytes."""

    @abc.abstractmethod
    def bytes_to_copy(self, offset=0, skip=()):
        """How many bytes :meth:`copy_to` with the same arguments moves."""

    @abc.abstractmethod
    def copy_to(self, partial, monitor, offset=0, skip=()):
        """Copy the file from ``offset`` on into ``partial``; bytes moved.

        ``partial`` is a :class:`~cs2os_agent.transfer.partial.PartialFile`
        opened at ``offset``: write at the file's own offsets into
        ``partial.fd`` and call ``partial.advanced(position)`` as the copy
        goes, with growing positions before which every byte not skipped
        is written.  The caller finishes (size, fsync) or discards it.

        ``skip``: sorted, non-overlapping ``(start, end)`` byte ranges
        (end exclusive) that are neither read nor written: they stay holes
        in the copy.  ``offset`` may lie before or inside one of them.
        """

    def close(self):  # noqa: B027 - optional hook, most need nothing
        """Release whatever the transport holds open."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
