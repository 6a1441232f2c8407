"""cs2os_agent.agent.live.relay: header then stream into a FIFO (threads,
a real FIFO and unix socket; no process)."""

import os
import socket
import threading
import time

import pytest

from cs2os_agent.agent.live import relay


class Reader(threading.Thread):
    """What libvirt's restore does with the FIFO: read it to the end."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.data = b""

    def run(self):
        with open(self.path, "rb") as f:
            while chunk := f.read(65536):
                self.data += chunk


@pytest.fixture
def paths(tmp_path):
    fifo = str(tmp_path / "restore.fifo")
    os.mkfifo(fifo, 0o600)
    return fifo, str(tmp_path / "stream.sock")


def _send(sock_path, data):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        s.sendall(data)


def _relay(paths, header, limit=None, timeout=10):
    fifo, sock = paths
    r = relay.Relay(fifo, sock, header, None, time.monotonic() + timeout,
                    stream_limit=limit)
    r.start()
    return r


def test_header_then_the_whole_stream_reach_the_fifo(paths):
    stream = os.urandom(3 * relay.CHUNK + 17)
    r = _relay(paths, b"HEADER")
    reader = Reader(paths[0])
    reader.start()
    _send(paths[1], stream)
    r.join(10)
    reader.join(10)
    assert reader.data == b"HEADER" + stream
    assert (r.done, r.error, r.stream_bytes) == (True, None, len(stream))


def test_the_socket_is_only_the_owners(paths):
    r = _relay(paths, b"H")
    try:
        assert os.stat(paths[1]).st_mode & 0o777 == 0o600
    finally:
        r.cancel()
        r.join(5)


def test_a_cut_stream_ends_the_fifo_early(paths):
    r = _relay(paths, b"H", limit=relay.CHUNK)
    reader = Reader(paths[0])
    reader.start()
    # the sender (A's QEMU) sees its connection closed
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        _send(paths[1], os.urandom(64 * relay.CHUNK))
    r.join(10)
    reader.join(10)
    assert not r.done and "cut after" in r.error
    # the reader saw the FIFO end (EOF), short of the stream
    assert len(reader.data) <= 1 + relay.CHUNK
    assert not reader.is_alive()


def test_cancel_before_any_reader_ends_the_thread(paths):
    r = _relay(paths, b"H")
    r.cancel()
    r.join(5)
    assert not r.is_alive() and r.error == "cancelled"


def test_a_reader_blocked_in_open_is_released(paths):
    """The restore opened the FIFO after the relay gave up: it would wait
    in open() for ever without unblock_reader."""
    r = _relay(paths, b"H", timeout=0.3)
    r.join(5)
    assert r.error == "timed out"
    reader = Reader(paths[0])
    reader.start()
    deadline = time.monotonic() + 5
    while reader.is_alive() and time.monotonic() < deadline:
        r.unblock_reader()
        reader.join(0.05)
    assert not reader.is_alive() and reader.data == b""
