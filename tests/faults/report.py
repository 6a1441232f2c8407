"""The fault suite's table: one line per case, a summary at session end.

Tests call ``record(...)``; the summary (fault x crash point, cases run,
whether every invariant held) is printed at the end of the session and
written to $CS2OS_FAULTS_REPORT, else to faults-report.txt in pytest's
base temp dir.
"""

import collections
import os
import threading

_ROWS = []
_LOCK = threading.Lock()
_CONFIG = None

HEADER = "%-34s %-5s %-17s %-10s %-8s %7s  %s" % (
    "crash point", "flow", "fault", "outcome", "expected", "seconds",
    "invariants")


def configure(config):
    global _CONFIG
    _CONFIG = config


def _line(row):
    return "%-34s %-5s %-17s %-10s %-8s %7.1f  %s" % (
        row["point"], row["flow"], row["fault"], row["outcome"],
        {True: "yes", False: "NO", None: "-"}[row["expected"]],
        row["seconds"], "held" if row["held"] else
        "BROKEN: " + row["note"])


def record(point, flow, fault, outcome, seconds, held, note="",
           expected=None):
    """``expected``: the outcome was the one the case expects (True,
    False), or None when the case had no expectation beyond the
    invariants."""
    row = {"point": point, "flow": flow, "fault": fault,
           "outcome": outcome, "seconds": seconds, "held": held,
           "note": note, "expected": expected}
    with _LOCK:
        _ROWS.append(row)
    line = _line(row)
    print("\n[fault] " + line)
    return row


def row_unexpected(row):
    return int(row["expected"] is False)


def summary():
    if not _ROWS:
        return ""
    lines = ["cs2os fault suite (CS2OS_FAULTS=%s): %d cases"
             % (os.environ.get("CS2OS_FAULTS", "ci"), len(_ROWS)), "",
             HEADER]
    lines += [_line(r) for r in _ROWS]
    groups = collections.OrderedDict()
    for r in _ROWS:
        g = groups.setdefault((r["flow"], r["fault"]),
                              {"n": 0, "held": 0, "outcomes": set(),
                               "points": [], "unexpected": 0})
        g["n"] += 1
        g["unexpected"] += row_unexpected(r)
        g["held"] += bool(r["held"])
        g["outcomes"].add(r["outcome"])
        g["points"].append(r["point"])
    lines += ["", "%-5s %-17s %5s %5s %10s  %-22s %s" % (
        "flow", "fault", "cases", "held", "unexpected", "outcomes",
        "crash points")]
    for (flow, fault), g in groups.items():
        lines.append("%-5s %-17s %5d %5s %10d  %-22s %s" % (
            flow, fault, g["n"],
            "all" if g["held"] == g["n"] else "%d" % g["held"],
            g["unexpected"], ",".join(sorted(g["outcomes"])),
            " ".join(g["points"])))
    total_held = sum(bool(r["held"]) for r in _ROWS)
    unexpected = sum(row_unexpected(r) for r in _ROWS)
    lines += ["", "every invariant held in %d of %d cases; %d ended with "
              "an outcome other than expected; %.0f s in all"
              % (total_held, len(_ROWS), unexpected,
                 sum(r["seconds"] for r in _ROWS))]
    return "\n".join(lines) + "\n"


def finish(session):
    text = summary()
    if not text:
        return
    path = os.environ.get("CS2OS_FAULTS_REPORT")
    if not path:
        try:
            base = session.config._tmp_path_factory.getbasetemp()
        except Exception:  # noqa: BLE001 - no temp dir made: cwd
            base = os.getcwd()
        path = os.path.join(str(base), "faults-report.txt")
    with open(path, "w") as f:
        f.write(text)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    out = text + "(written to %s)" % path
    if reporter is not None:
        reporter.write_line("")
        for line in out.splitlines():
            reporter.write_line(line)
    else:
        print(out)
