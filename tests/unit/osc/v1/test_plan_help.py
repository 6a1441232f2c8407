"""What `openstack cs2os plan create|start --help` says: --file reads YAML
as well as JSON, and start's --wait watches the plan, not a migration."""

import pytest

from cs2os_agent.osc.v1 import plan as plan_cmd
from tests.unit.osc.v1.test_migration import FakeApp


def _help(cls, capsys):
    parser = cls(FakeApp(), None).get_parser("openstack cs2os plan")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    # argparse wraps at the terminal's width: compare words only.
    return " ".join(capsys.readouterr().out.split())


def test_create_file_reads_yaml_or_json(capsys):
    text = _help(plan_cmd.CreatePlan, capsys)
    assert "Plan document, YAML or JSON" in text
    assert "JSON plan document" not in text


def test_start_wait_watches_the_plan(capsys):
    text = _help(plan_cmd.StartPlan, capsys)
    assert "Watch the plan until it is no longer running" in text
    assert "Watch the migration" not in text
    assert "not the plan" in text


def test_start_wait_options_parse_as_before():
    cmd = plan_cmd.StartPlan(FakeApp(), None)
    args = cmd.get_parser("openstack cs2os plan").parse_args(
        ["p-1", "--wait", "--poll-interval", "0.5", "--timeout", "30"])
    assert (args.wait, args.poll_interval, args.timeout) == (True, 0.5, 30.0)
    args = cmd.get_parser("openstack cs2os plan").parse_args(["p-1"])
    assert (args.wait, args.poll_interval, args.timeout) == (False, 2.0,
                                                              None)
