"""cs2os_agent.osc.v1.progress: the --wait loop and what it prints.

A fake clock that only moves when the loop sleeps makes every run exact.
"""

import io

import pytest
from osc_lib import exceptions as osc_exc

from cs2os_agent.osc import client
from cs2os_agent.osc.v1 import progress
from tests.fakes.clock import FakeClock

MIB = 1024**2
GIB = 1024**3


class Fetcher:
    """Answers get_migration from a script; an exception is raised."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, migration_id):
        self.calls.append(migration_id)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def rec(state="running", step="image", done=None, total=None, rate=None,
        **extra):
    return dict(id="m-1", state=state, step=step, bytes_done=done,
                bytes_total=total, rate_bps=rate, **extra)


@pytest.mark.parametrize("nbytes, text", [
    (0, "0.0 MiB"),
    (512 * MIB, "512.0 MiB"),
    (GIB - MIB, "1023.0 MiB"),
    (GIB, "1.0 GiB"),
    (3 * GIB // 2, "1.5 GiB"),
])
def test_format_size(nbytes, text):
    assert progress.format_size(nbytes) == text


@pytest.mark.parametrize("seconds, text", [
    (0, "0:00"), (41.9, "0:41"), (600, "10:00"), (3723, "1:02:03"),
])
def test_format_duration(seconds, text):
    assert progress.format_duration(seconds) == text


def test_percent_and_eta_math():
    r = rec(done=GIB, total=4 * GIB, rate=100 * MIB)
    assert progress.percent(r) == 25
    # 3 GiB left at 100 MiB/s.
    assert progress.eta_seconds(r) == pytest.approx(30.72)
    assert progress.percent(rec(done=5, total=3)) == 100
    assert progress.percent(rec(done=None, total=3)) == 0
    assert progress.percent(rec(done=5, total=None)) is None
    assert progress.eta_seconds(rec(done=1, total=3, rate=0)) is None
    assert progress.eta_seconds(rec(done=1, total=None, rate=5)) is None


def test_describe_running_with_everything():
    r = rec(step="sync", done=GIB, total=4 * GIB, rate=100 * MIB)
    assert progress.describe(r) == (
        "running sync, 1.0 GiB / 4.0 GiB (25%), 100.0 MiB/s, ETA 0:30")


def test_describe_shows_the_current_steps_own_progress():
    # The API's progress: the boot copies nothing, so no bytes (the
    # record's own are the template upload's, done before it).
    boot = rec(step="boot", done=5 * MIB, total=5 * MIB, rate=MIB,
               progress={"step": "boot", "step_number": 4, "steps": 10})
    assert progress.describe(boot) == "running boot (step 4 of 10)"
    assert progress.percent(boot) is None
    sync = rec(step="sync", done=5 * MIB, total=5 * MIB, rate=MIB,
               progress={"step": "sync", "step_number": 6, "steps": 10,
                         "bytes_done": GIB, "bytes_total": 4 * GIB,
                         "rate_bps": 100 * MIB})
    assert progress.describe(sync) == (
        "running sync (step 6 of 10), 1.0 GiB / 4.0 GiB (25%), "
        "100.0 MiB/s, ETA 0:30")
    # Once final, no place in the flow either.
    assert progress.describe(dict(sync, state="succeeded")) == (
        "succeeded sync, 1.0 GiB / 4.0 GiB (25%)")


def test_describe_without_a_total_or_rate():
    assert progress.describe(rec(done=300 * MIB)) == "running image, 300.0 MiB"
    assert progress.describe(rec(state="queued", step=None)) == "queued"
    # A finished migration has no rate or ETA worth showing.
    assert progress.describe(rec(state="succeeded", step="start", done=GIB,
                                 total=GIB, rate=5)) == (
        "succeeded start, 1.0 GiB / 1.0 GiB (100%)")


def test_tty_redraws_one_line_and_ends_it():
    out = io.StringIO()
    reporter = progress.Reporter(out, tty=True, width=200)
    reporter.update(rec(step="image", done=GIB, total=4 * GIB,
                        rate=100 * MIB))
    reporter.update(rec(state="queued", step=None))
    reporter.finish()
    first = ("[##........]   25%  ETA 0:30  100.0 MiB/s  1.0 GiB / 4.0 GiB"
             "  running image")
    # The shorter second line is padded so nothing of the first remains.
    assert out.getvalue() == ("\r" + first + "\r" + "queued".ljust(len(first))
                              + "\n")


def test_tty_line_fits_80_columns_with_eta_and_rate():
    line = progress.tty_line(rec(step="image", done=GIB, total=40 * GIB,
                                 rate=123 * 1024**2))
    assert line == ("[..........]    2%  ETA 5:24  123.0 MiB/s  1.0 GiB / "
                    "40.0 GiB  running image")
    assert len(line) < 80


def test_tty_line_never_wraps():
    out = io.StringIO()
    reporter = progress.Reporter(out, tty=True, width=30)
    reporter.update(rec(step="image", done=GIB, total=4 * GIB))
    assert out.getvalue() == "\r[##........]   25%  1.0 GiB /"


def test_tty_line_of_a_finished_migration():
    assert progress.tty_line(rec(state="failed", step="boot", done=GIB,
                                 total=GIB, rate=9)) == (
        "[##########]  100%  1.0 GiB / 1.0 GiB  failed boot")


def test_non_tty_prints_lines_on_change_and_throttles_progress():
    out = io.StringIO()
    t = FakeClock()
    reporter = progress.Reporter(out, tty=False, clock=t.monotonic,
                                 line_interval=5)
    reporter.update(rec(state="queued", step=None))
    t.now += 2
    reporter.update(rec(step="image", done=0, total=GIB))   # new step
    t.now += 2
    reporter.update(rec(step="image", done=MIB, total=GIB))  # too soon
    t.now += 2
    reporter.update(rec(step="image", done=MIB, total=GIB))  # no change
    t.now += 2
    reporter.update(rec(step="image", done=GIB // 2, total=GIB))  # due
    t.now += 1
    reporter.update(rec(state="succeeded", step="start", done=GIB,
                        total=GIB))
    reporter.finish()
    assert out.getvalue().splitlines() == [
        "[0:00] queued",
        "[0:02] running image, 0.0 MiB / 1.0 GiB (0%)",
        "[0:08] running image, 512.0 MiB / 1.0 GiB (50%)",
        "[0:09] succeeded start, 1.0 GiB / 1.0 GiB (100%)",
    ]
    assert "\r" not in out.getvalue()


def test_reporter_asks_the_stream_whether_it_is_a_tty():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    progress.Reporter(out, width=80).update(rec(state="queued", step=None))
    assert out.getvalue() == "\rqueued"


def wait(fetch, first, t, **kwargs):
    out = io.StringIO()
    reporter = progress.Reporter(out, tty=False, clock=t.monotonic)
    final = progress.wait_for_migration(
        fetch, first, reporter, clock=t.monotonic, sleep=t.sleep, **kwargs)
    return final, out.getvalue()


def test_wait_polls_until_a_terminal_state():
    t = FakeClock()
    done = rec(state="succeeded", step="start", done=GIB, total=GIB)
    fetch = Fetcher(rec(step="image", done=1, total=GIB), done)
    final, out = wait(fetch, rec(state="queued", step=None), t,
                      poll_interval=3)
    assert final == done
    assert fetch.calls == ["m-1", "m-1"]
    assert t.sleeps == [3, 3]
    assert out.splitlines()[-1] == (
        "[0:06] succeeded start, 1.0 GiB / 1.0 GiB (100%)")


def test_wait_returns_a_failure_without_polling_again():
    t = FakeClock()
    failed = rec(state="failed", step="boot", error="No valid host")
    final, _ = wait(Fetcher(), failed, t)
    assert final is failed
    assert t.sleeps == []


def test_wait_times_out_with_the_state_in_the_message():
    t = FakeClock()
    fetch = Fetcher(rec(step="sync"), rec(step="sync"), rec(step="sync"))
    with pytest.raises(osc_exc.CommandError) as info:
        wait(fetch, rec(state="queued", step=None), t, poll_interval=2,
             timeout=5)
    assert str(info.value) == (
        "Timed out after 5s waiting for migration m-1 (state running, "
        "step sync); it continues in the background.")
    # The last sleep is cut to the deadline rather than overshooting it.
    assert t.sleeps == [2, 2, 1]


def test_wait_rides_out_a_short_api_outage():
    t = FakeClock()
    fetch = Fetcher(
        client.ApiError(503, "Service Unavailable"),
        client.ApiUnreachable("Cannot reach the cs2os API: refused"),
        rec(state="succeeded"),
    )
    final, out = wait(fetch, rec(), t)
    assert final["state"] == "succeeded"
    assert "Service Unavailable (HTTP 503); retrying\n" in out
    assert "Cannot reach the cs2os API: refused; retrying\n" in out


def test_wait_gives_up_when_the_api_stays_away():
    t = FakeClock()
    down = [client.ApiUnreachable("refused") for _ in range(10)]
    fetch = Fetcher(*down)
    with pytest.raises(client.ApiUnreachable):
        wait(fetch, rec(), t, poll_interval=2, unreachable_grace=5)
    # Failures at +2 (start), +4, +6 are within 5 s; +8 is not.
    assert len(fetch.calls) == 4


def test_wait_does_not_retry_a_real_error():
    t = FakeClock()
    fetch = Fetcher(client.ApiError(404, "Migration m-1 could not be found."))
    with pytest.raises(client.ApiError, match="could not be found"):
        wait(fetch, rec(), t)
    assert len(fetch.calls) == 1


def test_ctrl_c_stops_watching_and_says_how_to_resume():
    t = FakeClock()
    out = io.StringIO()

    def interrupted_sleep(seconds):
        raise KeyboardInterrupt

    fetch = Fetcher()
    reporter = progress.Reporter(out, tty=True, width=80)
    with pytest.raises(KeyboardInterrupt):
        progress.wait_for_migration(fetch, rec(), reporter, clock=t.monotonic,
                                    sleep=interrupted_sleep)
    assert fetch.calls == []
    # The progress line is ended before the hint.
    assert out.getvalue() == (
        "\rrunning image\n"
        "Stopped watching migration m-1; it continues in the background. "
        "Watch it again with: openstack cs2os migration show --wait m-1\n")


def test_raise_if_unsuccessful():
    progress.raise_if_unsuccessful(rec(state="succeeded"))
    with pytest.raises(osc_exc.CommandError) as info:
        progress.raise_if_unsuccessful(
            rec(state="failed", step="boot", error="No valid host was found"))
    assert str(info.value) == (
        "Migration m-1 failed at step boot: No valid host was found")
    with pytest.raises(osc_exc.CommandError, match="m-1 cancelled"):
        progress.raise_if_unsuccessful(rec(state="cancelled", error=None))
