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
    def bytes_to_copy(self):
        """How many bytes :meth:`copy_to` will move (progress total)."""

    @abc.abstractmethod
    def copy_to(self, dest_path, monitor):
        """Write the whole file to ``dest_path``, fsync it, return bytes moved.

        ``dest_path`` is created or truncated; on any exception it may hold
        a partial copy, which the caller removes.
        """

    def close(self):  # noqa: B027 - optional hook, most need nothing
        """Release whatever the transport holds open."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
