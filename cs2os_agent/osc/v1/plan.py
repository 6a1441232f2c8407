"""``openstack cs2os plan ...``: migration plans (/v1/plans)."""

import time

import yaml
from cliff import columns as cliff_columns
from osc_lib import exceptions as osc_exc
from osc_lib.cli import format_columns
from osc_lib.command import command

from cs2os_agent.common import states
from cs2os_agent.osc.v1 import live
from cs2os_agent.osc.v1 import maps
from cs2os_agent.osc.v1 import migration
from cs2os_agent.osc.v1 import progress
from cs2os_agent.osc.v1 import schedule

PLAN_FIELDS = ("id", "name", "state", "vm_count", "counts", "bytes_done",
               "bytes_total", "defaults", "selector", "limits", "failed",
               "user_id", "project_id", "created_at", "updated_at")
EVENT_COLUMNS = ("Time", "Kind", "VM", "Migration", "Message")
# The plan's own caps on its migrations in flight (CLI option = key).
LIMIT_OPTIONS = ("max_in_flight", "max_per_compute_host", "max_per_kvm_host",
                 "max_per_pool")
VM_COLUMNS = ("VM", "VM ID", "Migration", "State", "Step", "Error")
# CLI option -> selector key (the plan's CloudStack selector).
SELECTOR_OPTIONS = (("account", "account"), ("domain", "domain"),
                    ("project", "project"), ("zone", "zone"),
                    ("tag", "tag"), ("kvm_host", "host"), ("pool", "pool"))
FINAL = states.FINAL + ("skipped", "not_started")


class VmsColumn(cliff_columns.FormattableColumn):
    """One line per VM: name, state, step, migration, error."""

    def human_readable(self):
        return "\n".join(_vm_line(r) for r in self._value or [])

    def machine_readable(self):
        return [dict(r) for r in self._value or []]


def _vm_line(row):
    text = "%s: %s" % (row.get("vm_name") or row.get("vm"), row.get("state"))
    if row.get("step") and row.get("state") not in FINAL:
        text += " (%s)" % row["step"]
    if row.get("migration_id"):
        text += " migration %s" % row["migration_id"]
    if row.get("error"):
        text += ": %s" % row["error"]
    return text


def show_plan(plan):
    """ShowOne's (columns, data) of a plan's view."""
    fields = [f for f in PLAN_FIELDS if f in plan] + ["vms"]
    data = []
    for field in fields:
        value = plan.get(field)
        if field in ("counts", "defaults", "selector", "limits") \
                and value is not None:
            value = format_columns.DictColumn(value)
        elif field == "failed":
            value = format_columns.ListDictColumn(value or [])
        elif field == "vms":
            value = VmsColumn(value)
        data.append(value)
    return tuple(fields), tuple(data)


def vm_rows(plan):
    """Lister's (columns, rows): the plan's VMs."""
    return VM_COLUMNS, [
        (r.get("vm_name") or r.get("vm"), r.get("vm_id"),
         r.get("migration_id"), r.get("state"), r.get("step"),
         r.get("error")) for r in plan.get("vms") or []]


def summary(plan):
    counts = {k: v for k, v in (plan.get("counts") or {}).items() if v}
    text = "Plan %s (%s): %s; %s" % (
        plan.get("id"), plan.get("name"), plan.get("state"),
        ", ".join("%d %s" % (v, k) for k, v in sorted(counts.items()))
        or "no VMs")
    if plan.get("bytes_total"):
        text += "; %s / %s" % (progress.format_size(plan["bytes_done"]),
                               progress.format_size(plan["bytes_total"]))
    return text


def _plan_argument(parser, verb):
    parser.add_argument("plan", metavar="<plan>", help="Plan to %s (ID)"
                        % verb)


def _load(path):
    """The plan document in ``path``: YAML, or JSON (which YAML reads
    too)."""
    try:
        with open(path) as f:
            body = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise osc_exc.CommandError("Cannot read plan file %s: %s"
                                   % (path, exc)) from exc
    if not isinstance(body, dict):
        raise osc_exc.CommandError("Plan file %s must hold a mapping "
                                   "(name, defaults, vms, selector)" % path)
    return body


class CreatePlan(command.ShowOne):
    """Create a migration plan (state draft) from VMs, a file or a
    CloudStack selector."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="<name>", help="Plan name")
        parser.add_argument(
            "--vm", metavar="<cloudstack-vm>", action="append", default=[],
            dest="vms", help="CloudStack VM (ID or name); repeat, in the "
            "order they start")
        parser.add_argument(
            "--file", metavar="<plan.yaml>",
            help="Plan document, YAML or JSON: name, defaults, vms (names, "
            "IDs or {vm, overrides}), selector, limits, start_at; options "
            "given here override it")
        group = parser.add_argument_group(
            "CloudStack selector (resolved now into the plan's VMs; IDs "
            "or names; every one given must match)")
        for option, key in SELECTOR_OPTIONS:
            group.add_argument(
                "--%s" % option.replace("_", "-"), dest="sel_" + option,
                metavar="<%s>" % key,
                help={"tag": "VMs with this tag (key=value)",
                      "kvm_host": "VMs running on this KVM host",
                      "pool": "VMs whose ROOT volume is on this primary "
                              "storage pool",
                      "project": "VMs of this CloudStack project",
                      "account": "VMs of this account (with --domain)",
                      }.get(option, "VMs in this %s" % key))
        group = parser.add_argument_group("Defaults of every migration")
        group.add_argument("--host", metavar="<compute-host>")
        group.add_argument("--aggregate", metavar="<aggregate>",
                           help="Nova host aggregate (ID or name) to "
                           "spread the servers over, instead of --host")
        group.add_argument("--flavor", metavar="<flavor>")
        group.add_argument("--mode", choices=states.MODES)
        group.add_argument("--cutover", choices=states.CUTOVERS)
        group.add_argument("--cutover-method",
                           choices=states.CUTOVER_METHODS)
        group.add_argument("--target-project", metavar="<project>",
                           help="Keystone project the servers land in")
        group.add_argument("--volume-type", metavar="<volume-type>",
                           help="Cinder volume type of the data disks' "
                           "volumes")
        group.add_argument("--network", action="append",
                           metavar="<cloudstack-net>=<neutron-net>",
                           type=migration._network_pair, dest="networks")
        for flag in ("delete-source", "drop-unmapped-nics", "config-drive",
                     "keep-snapshots"):
            group.add_argument("--" + flag, action="store_true",
                               default=None)
        schedule.add_arguments(group)
        maps.add_arguments(group)
        live.add_arguments(group)
        group = parser.add_argument_group(
            "The plan's own limits on its migrations in flight (besides "
            "the [conductor] max_* ones on everyone's)")
        for option in LIMIT_OPTIONS:
            group.add_argument("--" + option.replace("_", "-"), type=int,
                               metavar="<n>", dest="limit_" + option)
        return parser

    def take_action(self, parsed_args):
        body = _load(parsed_args.file) if parsed_args.file else {}
        body["name"] = parsed_args.name
        defaults = dict(body.get("defaults") or {})
        given = {"host": parsed_args.host,
                 "aggregate": parsed_args.aggregate,
                 "flavor": parsed_args.flavor,
                 "mode": parsed_args.mode, "cutover": parsed_args.cutover,
                 "cutover_method": parsed_args.cutover_method,
                 "project": parsed_args.target_project,
                 "networks": dict(parsed_args.networks)
                 if parsed_args.networks else None,
                 "delete_source": parsed_args.delete_source,
                 "drop_unmapped_nics": parsed_args.drop_unmapped_nics,
                 "config_drive": parsed_args.config_drive,
                 "keep_snapshots": parsed_args.keep_snapshots,
                 "volume_type": parsed_args.volume_type}
        timing = schedule.fields(parsed_args)
        # The plan's start time is the plan's own field: its VMs' default.
        if timing.pop("start_at"):
            body["start_at"] = parsed_args.start_at
        given.update(timing, **live.fields(parsed_args))
        if parsed_args.host or parsed_args.aggregate:
            # Either says where the servers go: it replaces the file's.
            defaults.pop("host", None)
            defaults.pop("aggregate", None)
        defaults.update({k: v for k, v in given.items() if v is not None})
        for field, entries in maps.given(parsed_args).items():
            # Entries over the file's map of the same name, key by key.
            defaults[field] = dict(defaults.get(field) or {}, **entries)
        if defaults:
            body["defaults"] = defaults
        limits = dict(body.get("limits") or {})
        limits.update({k: getattr(parsed_args, "limit_" + k)
                       for k in LIMIT_OPTIONS
                       if getattr(parsed_args, "limit_" + k) is not None})
        if limits:
            body["limits"] = limits
        if parsed_args.vms:
            body["vms"] = list(body.get("vms") or []) + parsed_args.vms
        selector = dict(body.get("selector") or {})
        selector.update({key: getattr(parsed_args, "sel_" + option)
                         for option, key in SELECTOR_OPTIONS
                         if getattr(parsed_args, "sel_" + option)})
        if selector:
            body["selector"] = selector
        plan = self.app.client_manager.cs2os.create_plan(body)
        return show_plan(plan)


class ListPlan(command.Lister):
    """List migration plans."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--state",
                            choices=("draft", "running", "done",
                                     "cancelled"))
        parser.add_argument("--name", metavar="<name>")
        return parser

    def take_action(self, parsed_args):
        plans = self.app.client_manager.cs2os.list_plans(
            state=parsed_args.state, name=parsed_args.name)
        cols = ("ID", "Name", "State", "VMs", "Queued", "Running",
                "Succeeded", "Failed", "Skipped")
        return cols, [
            (p.get("id"), p.get("name"), p.get("state"), p.get("vm_count"))
            + tuple((p.get("counts") or {}).get(k, 0) for k in (
                "queued", "running", "succeeded", "failed", "skipped"))
            for p in plans]


class _PlanLister(command.Lister):
    """A per-VM table of one plan; the summary goes to stderr."""

    verb = "show"
    exit_code = 0

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _plan_argument(parser, self.verb)
        return parser

    def run(self, parsed_args):
        return super().run(parsed_args) or self.exit_code

    def act(self, client, plan_id):
        return client.get_plan(plan_id)

    def take_action(self, parsed_args):
        plan = self.act(self.app.client_manager.cs2os, parsed_args.plan)
        self.app.stderr.write(summary(plan) + "\n")
        return vm_rows(plan)


class ShowPlan(_PlanLister):
    """Show a plan: one row per VM with its migration, or its event log."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--events", action="store_true",
            help="List the plan's event log instead (created, validated, "
            "started, each VM's migration created, skipped or ended, "
            "cancelled, retried, done)")
        return parser

    def take_action(self, parsed_args):
        if not parsed_args.events:
            return super().take_action(parsed_args)
        plan = self.act(self.app.client_manager.cs2os, parsed_args.plan)
        self.app.stderr.write(summary(plan) + "\n")
        return EVENT_COLUMNS, [
            (e.get("created_at"), e.get("kind"), e.get("vm"),
             e.get("migration_id"), e.get("message"))
            for e in plan.get("events") or []]


class CancelPlan(_PlanLister):
    """Cancel a plan and its active migrations."""

    verb = "cancel"

    def act(self, client, plan_id):
        return client.plan_action(plan_id, "cancel")


class RetryPlan(_PlanLister):
    """Retry a plan's failed migrations."""

    verb = "retry"

    def act(self, client, plan_id):
        return client.plan_action(plan_id, "retry")


class ValidatePlan(_PlanLister):
    """Run the preflight of every VM of a plan: the findings table."""

    verb = "validate"

    def take_action(self, parsed_args):
        plan = self.app.client_manager.cs2os.plan_action(parsed_args.plan,
                                                         "validate")
        rows = []
        for row in plan.get("vms") or []:
            report = row.get("preflight") or {}
            name = row.get("vm_name") or row.get("vm")
            findings = sorted(report.get("findings") or [],
                              key=lambda f: f.get("severity") != "critical")
            if not findings:
                rows.append((name, "ok", None, "no findings"))
            rows.extend((name, f.get("severity"), f.get("check"),
                         f.get("message")) for f in findings)
        critical = sum(1 for r in plan.get("vms") or []
                       if not (r.get("preflight") or {}).get("ok", True))
        self.app.stderr.write(
            "Plan %s: %d of %d VMs have a critical finding (skipped when "
            "the plan starts)\n" % (plan.get("id"), critical,
                                    len(plan.get("vms") or [])))
        return ("VM", "Severity", "Check", "Message"), rows


class StartPlan(_PlanLister):
    """Start a plan: one migration per VM without a critical finding."""

    verb = "start"
    clock = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        # The migration's --wait, with words for a plan.
        parser.add_argument(
            "--wait", action="store_true",
            help="Watch the plan until it is no longer running, a line per "
            "VM change on stderr; exit non-zero if a VM's migration "
            "failed, was cancelled or was not started. Ctrl-C stops "
            "watching, not the plan.")
        parser.add_argument(
            "--poll-interval", type=migration._positive(float), default=2.0,
            metavar="<seconds>",
            help="Seconds between status checks with --wait (default 2)")
        parser.add_argument(
            "--timeout", type=migration._positive(float),
            metavar="<seconds>",
            help="With --wait, give up watching after this many seconds "
            "(default: no limit); the plan goes on")
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.cs2os
        plan = client.plan_action(parsed_args.plan, "start")
        if parsed_args.wait:
            plan = self._wait(client, plan, parsed_args)
            if any(r.get("state") in (states.FAILED, states.CANCELLED,
                                      "not_started")
                   for r in plan.get("vms") or []):
                self.exit_code = 1
        else:  # --wait wrote it already
            self.app.stderr.write(summary(plan) + "\n")
        return vm_rows(plan)

    def _wait(self, client, plan, parsed_args):
        """Poll until the plan is no longer running; a line per change."""
        deadline = None if parsed_args.timeout is None else \
            self.clock() + parsed_args.timeout
        last = {}
        try:
            while True:
                for row in plan.get("vms") or []:
                    line = _vm_line(row)
                    if last.get(row["vm"]) != line:
                        last[row["vm"]] = line
                        self.app.stderr.write("  %s\n" % line)
                now = summary(plan)
                if last.get(None) != now:
                    last[None] = now
                    self.app.stderr.write(now + "\n")
                if plan.get("state") != "running":
                    return plan
                if deadline is not None and self.clock() >= deadline:
                    raise osc_exc.CommandError(
                        "Timed out waiting for plan %s; it continues in "
                        "the background" % plan.get("id"))
                self.sleep(parsed_args.poll_interval)
                plan = client.get_plan(plan["id"])
        except KeyboardInterrupt:
            self.app.stderr.write(
                "Stopped watching plan %s; it continues. Watch it with: "
                "openstack cs2os plan show %s\n" % (plan.get("id"),
                                                     plan.get("id")))
            raise


class DeletePlan(command.Command):
    """Delete a plan none of whose migrations is active."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _plan_argument(parser, "delete")
        return parser

    def take_action(self, parsed_args):
        self.app.client_manager.cs2os.delete_plan(parsed_args.plan)

