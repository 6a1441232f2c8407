"""How ``openstack cs2os import --dry-run`` shows a preflight report."""

from cs2os_agent.osc.v1 import preflight

REPORT = {
    "ok": False, "summary": "1 critical, 1 warnings",
    "findings": [
        {"check": "network", "severity": "warning",
         "message": "dropped: NIC 1"},
        {"check": "flavor", "severity": "critical",
         "message": "flavor tiny not found"}],
    "plan": {"estimate": {"bytes_to_move": 5}, "vm": {"name": "web-1"},
             "nics": [{"mac": "02:00:00:00:00:01"}], "later": "x"},
}


def test_critical_findings_come_first_and_the_plan_in_reading_order():
    columns, data = preflight.columns_and_data(REPORT)
    assert columns == ("ok", "summary", "findings", "vm", "nics",
                       "estimate", "later")
    assert data[0] is False
    assert data[2].human_readable() == (
        "CRITICAL flavor: flavor tiny not found\n"
        "WARNING network: dropped: NIC 1")
    assert data[2].machine_readable() == REPORT["findings"]
    assert data[3].machine_readable() == {"name": "web-1"}
    assert data[6] == "x"


def test_no_findings_reads_none():
    columns, data = preflight.columns_and_data(
        {"ok": True, "summary": "0 critical, 0 warnings", "findings": [],
         "plan": {}})
    assert columns == ("ok", "summary", "findings")
    assert data[2].human_readable() == "none"
