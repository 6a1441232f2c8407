"""How ``openstack cs2os import --dry-run`` shows a preflight report."""

from cliff import columns as cliff_columns
from osc_lib.cli import format_columns

# The plan's parts in the order an operator reads them.
PLAN_FIELDS = ("vm", "project", "flavor", "host", "image", "nics",
               "estimate")


class FindingsColumn(cliff_columns.FormattableColumn):
    """One line per finding: severity, check, message; critical first."""

    def human_readable(self):
        findings = sorted(self._value or [],
                          key=lambda f: f.get("severity") != "critical")
        if not findings:
            return "none"
        return "\n".join("%s %s: %s" % (f.get("severity", "?").upper(),
                                        f.get("check"), f.get("message"))
                         for f in findings)

    def machine_readable(self):
        return list(self._value or [])


def _column(value):
    if isinstance(value, dict):
        return format_columns.DictColumn(value)
    if isinstance(value, list):
        return format_columns.ListDictColumn(value) if all(
            isinstance(v, dict) for v in value) else \
            format_columns.ListColumn(value)
    return value


def columns_and_data(report):
    """ShowOne's (columns, data) for ``report``."""
    plan = report.get("plan") or {}
    columns = ["ok", "summary", "findings"]
    data = [report.get("ok"), report.get("summary"),
            FindingsColumn(report.get("findings"))]
    for name in PLAN_FIELDS + tuple(sorted(set(plan) - set(PLAN_FIELDS))):
        if name in plan:
            columns.append(name)
            data.append(_column(plan[name]))
    return tuple(columns), tuple(data)
