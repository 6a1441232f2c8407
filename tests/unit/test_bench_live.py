"""tools/bench_live.py's pure parts: its arguments, the figures it takes
from a migration record and the consoles, the medians and the live/warm
ratio in its table.  No process, no libvirt: records and console
counters are made up here."""

import pytest

from tools import bench_live

A = "/var/tmp/cs/console/i-2-3-VM.log"
TEMP = "/var/lib/nova/instances/srv/cs2os-live-hop.log"
B = "/var/lib/nova/instances/srv/console.log"


def _live_record(hop_ms=12, move_ms=9, total=41.5):
    return {"started_at": "2026-12-07T17:00:00.000000",
            "finished_at": "2026-12-07T17:00:%09.6f" % total,
            "result": {"live": {"hop": {"downtime_ms": hop_ms},
                                "downtime_ms": move_ms}}}


def _warm_record(downtime_s=0.31, total=38.25):
    return {"started_at": "2026-12-07T17:01:00.000000",
            "finished_at": "2026-12-07T17:01:%09.6f" % total,
            "result": {"cutover": {"decided": 1.2},
                       "sync": {"seconds": 0.15},
                       "downtime_seconds": downtime_s}}


def test_parse_args_defaults_and_runs():
    args = bench_live.parse_args([])
    assert args.runs == 3 and args.cutover_method == "shutdown"
    assert bench_live.parse_args(["--runs", "1", "--cutover-method",
                                  "force"]).runs == 1
    with pytest.raises(SystemExit):
        bench_live.parse_args(["--runs", "0"])
    with pytest.raises(SystemExit):
        bench_live.parse_args(["--cutover-method", "manual"])


def test_live_row_pauses_qemu_downtime_and_tool_added():
    switches = [(0.045, 100, A, TEMP), (0.038, 900, TEMP, B)]
    row = bench_live.live_row(_live_record(), switches, B)
    assert row["hop_pause_ms"] == pytest.approx(45.0)
    assert row["move_pause_ms"] == pytest.approx(38.0)
    assert row["outage_ms"] == pytest.approx(83.0)
    # Each pause beyond QEMU's downtime of it: (45 - 12) + (38 - 9).
    assert row["tool_ms"] == pytest.approx(62.0)
    assert row["total_s"] == pytest.approx(41.5)


def test_live_row_without_qemu_downtime_has_no_tool_added():
    row = bench_live.live_row(_live_record(move_ms=None),
                              [(0.04, 1, A, TEMP), (0.03, 2, TEMP, B)], B)
    assert row["tool_ms"] is None and row["move_qemu_ms"] is None


@pytest.mark.parametrize("switches", [
    [(0.04, 1, A, TEMP)],  # the move's switch missing
    [(0.04, 1, A, TEMP), (0.03, 2, TEMP, A)],  # back to A: a rollback
])
def test_live_row_refuses_another_path_of_the_guest(switches):
    with pytest.raises(ValueError, match="did not go"):
        bench_live.live_row(_live_record(), switches, B)


def test_warm_row_outage_is_a_last_line_to_b_first():
    counters = [(10.00, A, 7), (10.01, A, 8), (13.25, B, 0),
                (13.26, B, 1)]
    row = bench_live.warm_row(_warm_record(), counters, A, B)
    assert row["outage_ms"] == pytest.approx(3240.0)
    assert row["tool_ms"] == pytest.approx(310.0)
    assert row["cutover_ms"] == pytest.approx(1200.0)
    assert row["total_s"] == pytest.approx(38.25)


def test_other_gap_is_the_longest_gap_within_one_file_and_the_window():
    counters = [(9.0, A, 1), (9.5, A, 2),  # before the migration
                (10.00, A, 3), (10.01, A, 4), (10.13, A, 5),  # 120 ms
                (10.20, TEMP, 6), (10.21, TEMP, 7),  # a switch: 70 ms
                (10.3, TEMP, 8), (12.0, TEMP, 9)]  # ends after the window
    assert bench_live.other_gap(counters, (10.0, 11.0)) == \
        pytest.approx(120.0)
    assert bench_live.other_gap(counters, (20.0, 21.0)) is None
    row = bench_live.warm_row(_warm_record(), counters + [(13.0, B, 0)], A,
                              B, (10.0, 11.0))
    assert row["stall_ms"] == pytest.approx(120.0)


def test_warm_row_needs_lines_on_both_sides():
    with pytest.raises(ValueError):
        bench_live.warm_row(_warm_record(), [(1.0, A, 1)], A, B)


def _rows():
    live = [bench_live.live_row(_live_record(hop, move), [
        (p1, 1, A, TEMP), (p2, 2, TEMP, B)], B)
        for hop, move, p1, p2 in ((10, 8, 0.040, 0.030),
                                  (14, 6, 0.050, 0.020),
                                  (12, None, 0.045, 0.060))]
    warm = [bench_live.warm_row(_warm_record(d), [
        (1.0, A, 1), (1.0 + o, B, 0)], A, B)
        for d, o in ((0.3, 3.0), (0.2, 5.0), (0.4, 4.0))]
    return live, warm


def test_medians_skip_missing_values():
    live, warm = _rows()
    lm = bench_live.medians(live)
    assert lm["outage_ms"] == pytest.approx(70.0)  # 70, 70, 105
    assert lm["hop_qemu_ms"] == 12
    assert lm["move_qemu_ms"] == pytest.approx(7.0)  # 8, 6 (one unknown)
    assert lm["tool_ms"] == pytest.approx(51.0)  # 52, 50 (one unknown)
    assert bench_live.medians(warm)["outage_ms"] == pytest.approx(4000.0)


def test_ratio():
    assert bench_live.ratio(80.0, 4000.0) == pytest.approx(0.02)
    assert bench_live.ratio(None, 4000.0) is None
    assert bench_live.ratio(80.0, 0) is None


def test_table_lists_runs_medians_ratio_and_definitions():
    live, warm = _rows()
    lines = bench_live.table(live, warm, "shutdown", 2)
    assert lines[0].startswith("cs2os live vs warm: 64 MiB counter guest, "
                               "3 runs")
    text = "\n".join(lines)
    assert [ln.split()[0:2] for ln in lines if ln.startswith("run ")] == [
        ["run", "1"], ["run", "2"], ["run", "3"]] * 2
    assert sum(ln.startswith("median") for ln in lines) == 2
    # Run 3's move downtime is unknown: shown as such, not as 0.
    run3 = [ln for ln in lines if ln.startswith("run 3")][0]
    assert " - ms" in run3
    assert "other gap" in lines[1]
    assert ("guest outage, live/warm (medians): 70.0 ms / 4000 ms = 0.0175"
            in text)
    assert "tool-added: the part of the outage cs2os's own work takes" \
        in text
    assert "stop request -> QEMU's events prove T" in text
    assert "suspend + end the job" in "\n".join(
        bench_live.table(live, warm, "force", 2))
