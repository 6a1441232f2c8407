"""cs2os_agent.agent.live.relay's ``stream_rate``: a slow stream on
purpose (fault injection: something can hit the move while it runs).
Threads, a real FIFO and unix socket; no process."""

import os
import time

from cs2os_agent.agent.live import relay
from tests.unit.live import test_relay as helpers

paths = helpers.paths  # the fixture


def test_a_rate_limited_stream_takes_its_time_and_arrives_whole(paths):
    fifo, sock = paths
    stream = os.urandom(300 * 1024)
    r = relay.Relay(fifo, sock, b"H", None, time.monotonic() + 30,
                    stream_rate=200 * 1024)
    r.start()
    reader = helpers.Reader(fifo)
    reader.start()
    started = time.monotonic()
    helpers._send(sock, stream)
    r.join(30)
    reader.join(30)
    took = time.monotonic() - started
    assert reader.data == b"H" + stream and r.done and r.error is None
    # 300 KiB at 200 KiB/s: the last chunk is due after 1.4 s at least
    assert 1.2 < took < 10, took


def test_chunks_follow_the_rate():
    r = object.__new__(relay.Relay)
    r.stream_rate = None
    assert r._chunk() == relay.CHUNK
    r.stream_rate = 100
    assert r._chunk() == 10
    r.stream_rate = 1
    assert r._chunk() == 1
