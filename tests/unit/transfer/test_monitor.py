import pytest

from cs2os_agent.common import exception
from cs2os_agent.transfer import monitor
from tests.fakes.clock import FakeClock


def make(clock, **kwargs):
    reports = []
    mon = monitor.TransferMonitor(
        "m1", "sync_overlay", 1000, report=reports.append,
        clock=clock, sleep=clock.sleep, **kwargs)
    return mon, reports


def test_reports_at_most_every_interval_and_on_finish():
    clock = FakeClock()
    mon, reports = make(clock, interval=5)
    mon.advance(100)
    assert reports == []
    clock.now += 5
    mon.advance(100)
    assert [r["bytes_done"] for r in reports] == [200]
    mon.finish()
    assert reports[-1]["bytes_done"] == 200
    assert reports[-1]["bytes_total"] == 1000
    assert reports[-1]["rate_bps"] == 40  # 200 bytes in 5 s


def test_bandwidth_limit_sleeps_to_the_average_rate():
    clock = FakeClock()
    # 8 Mbit/s = 1,000,000 bytes/s
    mon, _ = make(clock, interval=1000, max_bandwidth_mbps=8)
    mon.advance(500_000)
    mon.advance(500_000)
    assert sum(clock.sleeps) == pytest.approx(1.0)


def test_unlimited_never_sleeps():
    clock = FakeClock()
    mon, _ = make(clock, interval=1000)
    mon.advance(10**9)
    assert clock.sleeps == []


def test_cancel_stops_the_next_advance():
    clock = FakeClock()
    mon, _ = make(clock)
    mon.advance(1)
    mon.cancel()
    with pytest.raises(exception.MigrationCancelled, match="m1"):
        mon.advance(1)


def test_broken_report_channel_does_not_fail_the_copy():
    clock = FakeClock()

    def broken(progress):
        raise ConnectionError("bus down")

    mon = monitor.TransferMonitor("m1", "s", 10, report=broken, interval=0,
                                  clock=clock, sleep=clock.sleep)
    mon.advance(5)
    mon.finish()
    assert mon.done == 5
