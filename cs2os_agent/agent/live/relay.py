"""The relay: save-image header, then A's live stream, into libvirt's FIFO.

``virDomainRestore`` opens the FIFO and reads the header (B's live XML)
before it starts B's QEMU, which then reads the rest as its incoming
migration.  A's QEMU sends its stream with a QMP ``migrate`` to a unix
socket (a seccomp'd QEMU may not ``exec:``); this thread accepts that one
connection and copies every byte into the FIFO.

Nothing here blocks for ever: the FIFO is opened and written non-blocking
with short waits, and :meth:`Relay.cancel` ends the thread, closing the
FIFO, so a restore still waiting sees the stream end and fails (B is not
started), and A's migration fails on the closed socket.
"""

import errno
import os
import select
import socket
import threading
import time

CHUNK = 1024 * 1024
_WAIT = 0.2


class Relay(threading.Thread):
    def __init__(self, fifo, sock_path, header_bytes, owner, deadline,
                 stream_limit=None, stream_rate=None):
        """``owner``: (uid, gid) of A's QEMU, which connects to the socket.

        ``stream_limit`` and ``stream_rate`` are fault injection for
        tests: the relay stops after that many stream bytes, as a cut
        network would; it passes at most that many bytes a second, as a
        slow one would (a stream that lasts long enough to be hit by
        something, a libvirtd restart).
        """
        super().__init__(name="live-relay", daemon=True)
        self.fifo = fifo
        self.header = header_bytes
        self.deadline = deadline
        self.stream_limit = stream_limit
        self.stream_rate = stream_rate
        self.stream_bytes = 0
        self.error = None  # why the relay ended early, or None
        self.done = False  # the whole stream reached the FIFO
        self._cancelled = threading.Event()
        self._fd = None
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(sock_path)
        if owner is not None:
            os.chown(sock_path, *owner)
        os.chmod(sock_path, 0o600)
        self.listener.listen(1)
        self.listener.settimeout(_WAIT)

    def cancel(self):
        self._cancelled.set()

    def _expired(self):
        if self._cancelled.is_set():
            raise _Stopped("cancelled")
        if time.monotonic() > self.deadline:
            raise _Stopped("timed out")

    def _open_fifo(self):
        while True:
            self._expired()
            try:
                return os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # no reader yet
                    raise
            time.sleep(0.01)

    def _write(self, data):
        view = memoryview(data)
        while view:
            self._expired()
            _r, writable, _x = select.select([], [self._fd], [], _WAIT)
            if not writable:
                continue
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                continue
            view = view[n:]

    def _accept(self):
        while True:
            self._expired()
            try:
                conn, _addr = self.listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(_WAIT)
            return conn

    def run(self):
        conn = None
        try:
            self._fd = self._open_fifo()
            self._write(self.header)
            conn = self._accept()
            started = time.monotonic()
            while True:
                self._expired()
                self._throttle(started)
                try:
                    data = conn.recv(self._chunk())
                except TimeoutError:
                    continue
                if not data:
                    break
                if self.stream_limit is not None and \
                        self.stream_bytes + len(data) > self.stream_limit:
                    raise _Stopped("cut after %d bytes (fault injection)"
                                   % self.stream_limit)
                self._write(data)
                self.stream_bytes += len(data)
            self.done = True
        except _Stopped as exc:
            self.error = str(exc)
        except OSError as exc:
            self.error = "relay: %s" % exc
        finally:
            if conn is not None:
                conn.close()
            self.listener.close()
            if self._fd is not None:
                os.close(self._fd)

    def _chunk(self):
        if self.stream_rate is None:
            return CHUNK
        return max(1, min(CHUNK, int(self.stream_rate) // 10))

    def _throttle(self, started):
        """With ``stream_rate``: wait until the bytes so far are due."""
        if self.stream_rate is None:
            return
        while True:
            ahead = self.stream_bytes / self.stream_rate - (
                time.monotonic() - started)
            if ahead <= 0:
                return
            self._expired()
            time.sleep(min(ahead, _WAIT))

    def unblock_reader(self):
        """After the thread ended: a restore that opened the FIFO but got
        no writer (the relay never opened it) is blocked in open(); a
        writer that opens and closes lets it read EOF and fail."""
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return False  # no reader waiting, or the FIFO is gone
        os.close(fd)
        return True


class _Stopped(Exception):
    pass
