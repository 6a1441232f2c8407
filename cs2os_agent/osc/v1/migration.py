"""``openstack cs2os import`` and ``openstack cs2os migration ...``."""

import logging
import math
import time

from cliff import columns as cliff_columns
from osc_lib.cli import format_columns
from osc_lib.command import command

from cs2os_agent.common import states
from cs2os_agent.osc.v1 import live
from cs2os_agent.osc.v1 import maps
from cs2os_agent.osc.v1 import preflight
from cs2os_agent.osc.v1 import progress
from cs2os_agent.osc.v1 import schedule

LOG = logging.getLogger(__name__)

# Record fields in display order; fields a newer API adds are shown
# after these rather than hidden.
SHOW_FIELDS = (
    "id", "state", "step", "mode", "cutover", "cutover_method",
    "source_ref", "source_vm_id",
    "source_vm_name", "target_host", "aggregate", "compute_host", "flavor",
    "delete_source", "networks", "drop_unmapped_nics", "config_drive",
    "keep_snapshots", "volume_type", "start_at", "cutover_window",
    "nics",
    "bytes_done", "bytes_total", "rate_bps", "error",
    "result", "resources", "user_id", "project_id", "target_project_id",
    "request_id",
    "created_at", "updated_at", "started_at", "finished_at",
)


class EventsColumn(cliff_columns.FormattableColumn):
    """Events in time order, one per line (ListColumn would sort them)."""

    def human_readable(self):
        return "\n".join(_event_line(e) for e in self._value or [])

    def machine_readable(self):
        return [dict(e) for e in self._value or []]


def _event_line(event):
    head = " ".join(str(event[k]) for k in ("created_at", "step", "kind")
                    if event.get(k))
    return "%s: %s" % (head, event.get("message") or "")


class NicsColumn(cliff_columns.FormattableColumn):
    """One line per NIC: where it went and whether it kept its identity."""

    def human_readable(self):
        return "\n".join(_nic_line(n) for n in self._value or [])

    def machine_readable(self):
        return [dict(n) for n in self._value or []]


def _nic_line(nic):
    ip = nic.get("ip") or "-"
    if not nic.get("ip_preserved"):
        ip += " (was %s: not in the network's subnets)" % (
            nic.get("cloudstack_ip") or "none")
    return "%s -> %s port %s %s %s" % (
        nic.get("cloudstack_network") or nic.get("cloudstack_network_id"),
        nic.get("neutron_network") or nic.get("neutron_network_id"),
        nic.get("port_id"), nic.get("mac"), ip)


class ProgressColumn(cliff_columns.FormattableColumn):
    """Whole percent copied: ``42%`` in tables, ``42`` for machines."""

    def human_readable(self):
        return "" if self._value is None else "%d%%" % self._value


FORMATTERS = {
    "networks": format_columns.DictColumn,
    "nics": NicsColumn,
    "result": format_columns.DictColumn,
    "resources": format_columns.DictColumn,
    "events": EventsColumn,
}


def show_record(record):
    """(columns, values) of a record for a ShowOne."""
    # The NICs are the part of the result operators ask about first.
    record = dict(record, nics=(record.get("result") or {}).get("nics"))
    # Only warm migrations have a cutover; an API before 1.12 has no
    # schedule fields.
    fields = [f for f in SHOW_FIELDS
              if f not in ("cutover", "cutover_method", "start_at",
                           "cutover_window", "aggregate") or f in record]
    fields += sorted(k for k in record
                     if k not in SHOW_FIELDS and k != "events")
    if "events" in record:
        fields.append("events")
    values = []
    for field in fields:
        value = record.get(field)
        formatter = FORMATTERS.get(field)
        # None stays None (null in JSON) rather than becoming {} or [].
        if formatter and value is not None:
            value = formatter(value)
        values.append(value)
    return tuple(fields), tuple(values)


def _host(record):
    # Where the server landed (compute_host) once known, else where it
    # was asked to go; target_host is empty when the scheduler chooses.
    return (record.get("compute_host") or record.get("target_host")
            or (record.get("resources") or {}).get("host"))


LIST_COLUMNS = (
    ("ID", lambda r: r.get("id")),
    ("Source", lambda r: r.get("source_vm_name") or r.get("source_ref")),
    ("State", lambda r: r.get("state")),
    ("Step", lambda r: r.get("step")),
    ("Host", _host),
    # Where the server lands (its owner's project); empty until resolved.
    ("Target Project", lambda r: r.get("target_project_id")),
    ("Progress", lambda r: ProgressColumn(progress.percent(r))),
)
LONG_COLUMNS = (
    ("Source VM ID", lambda r: r.get("source_vm_id")),
    ("Mode", lambda r: r.get("mode")),
    ("Flavor", lambda r: r.get("flavor")),
    ("Bytes Done", lambda r: r.get("bytes_done")),
    ("Bytes Total", lambda r: r.get("bytes_total")),
    ("Rate (B/s)", lambda r: r.get("rate_bps")),
    ("Error", lambda r: r.get("error")),
    ("Project ID", lambda r: r.get("project_id")),
    ("Created At", lambda r: r.get("created_at")),
    ("Updated At", lambda r: r.get("updated_at")),
)


def _network_pair(text):
    cloudstack, sep, neutron = text.partition("=")
    if not sep or not cloudstack.strip() or not neutron.strip():
        raise ValueError(text)
    return cloudstack.strip(), neutron.strip()


_network_pair.__name__ = "<cloudstack-net>=<neutron-net>"


def _positive(kind):
    def parse(text):
        value = kind(text)
        # nan and inf would make sleep() fail or never return.
        if not math.isfinite(value) or value <= 0:
            raise ValueError(text)
        return value
    parse.__name__ = "positive %s" % kind.__name__
    return parse


class _Watching:
    """--wait support shared by the commands that can watch a migration.

    ``clock`` and ``sleep`` are attributes so tests can replace them on
    one command object.
    """

    clock = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    @staticmethod
    def add_wait_arguments(parser):
        parser.add_argument(
            "--wait", action="store_true",
            help="Watch the migration until it ends, with progress on "
            "stderr; exit non-zero unless it succeeds. Ctrl-C stops "
            "watching, not the migration.",
        )
        parser.add_argument(
            "--poll-interval", type=_positive(float), default=2.0,
            metavar="<seconds>",
            help="Seconds between status checks with --wait (default 2)",
        )
        parser.add_argument(
            "--timeout", type=_positive(float), metavar="<seconds>",
            help="With --wait, give up watching after this many seconds "
            "(default: no limit)",
        )

    def watch_and_show(self, record, parsed_args):
        if parsed_args.wait:
            stderr = self.app.stderr
            reporter = progress.Reporter(stderr, clock=self.clock)
            record = progress.wait_for_migration(
                self.app.client_manager.cs2os.get_migration, record,
                reporter, poll_interval=parsed_args.poll_interval,
                timeout=parsed_args.timeout, clock=self.clock,
                sleep=self.sleep,
            )
            progress.raise_if_unsuccessful(record)
        return show_record(record)


class ImportMigration(_Watching, command.ShowOne):
    """Migrate a CloudStack KVM VM into Nova."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "source", metavar="<cloudstack-vm>",
            help="CloudStack VM to migrate (ID or name)",
        )
        parser.add_argument(
            "--host", metavar="<compute-host>",
            help="Nova compute host to place the server on "
            "(default: the scheduler chooses)",
        )
        parser.add_argument(
            "--aggregate", metavar="<aggregate>",
            help="Nova host aggregate (ID or name) instead of --host: the "
            "usable host with a free slot and the fewest migrations")
        parser.add_argument(
            "--flavor", metavar="<flavor>",
            help="Nova flavor (name or ID) for the server "
            "(default: chosen from the VM's offering)")
        parser.add_argument(
            "--mode", choices=states.MODES,
            help="cold: stop the VM, then copy; warm: mirror its disk while "
            "it runs, then stop it and start the server in seconds; live: "
            "move the running guest into Nova, no reboot (API default: "
            "cold)")
        parser.add_argument(
            "--cutover", choices=states.CUTOVERS,
            help="With --mode warm: cut over as soon as the mirror is READY "
            "(auto, the default) or hold it READY until 'openstack cs2os "
            "migration cutover' (manual)")
        parser.add_argument(
            "--cutover-method", choices=states.CUTOVER_METHODS,
            help="With --mode warm: how the CloudStack VM stops at the "
            "cutover. shutdown (default): CloudStack shuts the guest down "
            "cleanly while the mirror keeps every write; force: freeze it "
            "at once, crash-consistent, for guests that will not shut down")
        parser.add_argument(
            "--delete-source", action="store_true", default=None,
            help="Delete the CloudStack VM after a successful migration",
        )
        parser.add_argument(
            "--network", metavar="<cloudstack-net>=<neutron-net>",
            action="append", type=_network_pair, dest="networks",
            help="Put the VM's NICs on CloudStack network <cloudstack-net> "
            "(id or name) on Neutron network <neutron-net> (id or name), "
            "with the same MAC and, where it fits a subnet, the same IP. "
            "Repeat for each network; overrides [cloudstack] network_map",
        )
        parser.add_argument(
            "--drop-unmapped-nics", action="store_true", default=None,
            help="Leave out NICs on networks with no mapping instead of "
            "refusing the migration",
        )
        parser.add_argument(
            "--config-drive", action="store_true", default=None,
            help="Give the server a config drive, for guests whose "
            "cloud-init cannot reach a metadata service (default: none)",
        )
        parser.add_argument(
            "--keep-snapshots", action="store_true", default=None,
            help="Cold only: copy the root volume whole and keep its "
            "internal snapshots (CloudStack VM snapshots) in the disk "
            "(default: drop them and copy only the current state's data)",
        )
        parser.add_argument(
            "--project", metavar="<project>",
            help="Keystone project (ID or name) the server lands in "
            "(default: the one --project-map, else [cloudstack] "
            "project_map, gives the VM's CloudStack owner)",
        )
        parser.add_argument(
            "--volume-type", metavar="<volume-type>",
            help="Cinder volume type (ID or name) of the volumes the VM's "
            "data disks become (default: --volume-type-map, then "
            "[cloudstack] volume_type_map, else Cinder's default type)",
        )
        schedule.add_arguments(parser)
        maps.add_arguments(parser)
        live.add_arguments(parser)
        parser.add_argument(
            "--dry-run", action="store_true", default=None,
            help="Show what the migration would do and what would stop it "
            "(the preflight report); record and create nothing",
        )
        self.add_wait_arguments(parser)
        return parser

    def take_action(self, parsed_args):
        record = self.app.client_manager.cs2os.create_migration(
            parsed_args.source, host=parsed_args.host,
            aggregate=parsed_args.aggregate,
            flavor=parsed_args.flavor, mode=parsed_args.mode,
            delete_source=parsed_args.delete_source,
            networks=dict(parsed_args.networks) if parsed_args.networks
            else None,
            drop_unmapped_nics=parsed_args.drop_unmapped_nics,
            config_drive=parsed_args.config_drive,
            keep_snapshots=parsed_args.keep_snapshots,
            cutover=parsed_args.cutover,
            cutover_method=parsed_args.cutover_method,
            project=parsed_args.project,
            volume_type=parsed_args.volume_type,
            dry_run=parsed_args.dry_run,
            **maps.given(parsed_args, schedule.fields(parsed_args),
                         live.fields(parsed_args)),
        )
        if record.get("dry_run"):
            return preflight.columns_and_data(record["preflight"])
        LOG.debug("Migration %s created", record.get("id"))
        return self.watch_and_show(record, parsed_args)


class ListMigration(command.Lister):
    """List migrations."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--state", choices=states.ALL,
            help="Only migrations in this state",
        )
        parser.add_argument(
            "--source", metavar="<cloudstack-vm>",
            help="Only migrations of this CloudStack VM (ID or name)",
        )
        parser.add_argument(
            "--host", metavar="<compute-host>",
            help="Only migrations to this compute host",
        )
        parser.add_argument(
            "--project", metavar="<project-id>",
            help="Only migrations whose servers land in this Keystone "
            "project (ID; another project than your token's needs the "
            "cs2os:migration:list:all_projects policy, admin by default)",
        )
        parser.add_argument(
            "--limit", type=_positive(int), metavar="<n>",
            help="Show one page of at most <n> migrations "
            "(default: all, fetched page by page)",
        )
        parser.add_argument(
            "--marker", metavar="<migration>",
            help="Start after this migration ID",
        )
        parser.add_argument(
            "--long", action="store_true", default=False,
            help="Show more columns",
        )
        return parser

    def take_action(self, parsed_args):
        records = self.app.client_manager.cs2os.list_migrations(
            state=parsed_args.state, source=parsed_args.source,
            host=parsed_args.host, project=parsed_args.project,
            limit=parsed_args.limit, marker=parsed_args.marker,
        )
        cols = LIST_COLUMNS + (LONG_COLUMNS if parsed_args.long else ())
        return (
            tuple(name for name, _ in cols),
            (tuple(get(r) for _, get in cols) for r in records),
        )


def _add_migration_argument(parser, verb):
    parser.add_argument(
        "migration", metavar="<migration>",
        help="Migration to %s (ID)" % verb,
    )


class ShowMigration(_Watching, command.ShowOne):
    """Show a migration, with its events."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_migration_argument(parser, "show")
        self.add_wait_arguments(parser)
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.cs2os
        record = client.get_migration(parsed_args.migration)
        return self.watch_and_show(record, parsed_args)


class CancelMigration(command.ShowOne):
    """Cancel a migration."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_migration_argument(parser, "cancel")
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.cs2os
        return show_record(client.cancel_migration(parsed_args.migration))


class RetryMigration(_Watching, command.ShowOne):
    """Retry a migration that did not succeed."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_migration_argument(parser, "retry")
        self.add_wait_arguments(parser)
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.cs2os
        record = client.retry_migration(parsed_args.migration)
        return self.watch_and_show(record, parsed_args)


class CutoverMigration(_Watching, command.ShowOne):
    """Cut a warm migration over: stop the CloudStack VM, start the server.

    For a migration held with --cutover manual; it cuts over as soon as
    its mirror is READY (at once if it is).  CloudStack shuts the VM down
    cleanly unless --force (or the import's --cutover-method force).
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_migration_argument(parser, "cut over")
        parser.add_argument(
            "--force", action="store_const", const=states.FORCE,
            dest="method",
            help="Freeze the CloudStack VM instead of letting CloudStack "
            "shut it down cleanly (crash-consistent; for a guest that "
            "will not shut down)",
        )
        self.add_wait_arguments(parser)
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.cs2os
        record = client.cutover_migration(parsed_args.migration,
                                          method=parsed_args.method)
        return self.watch_and_show(record, parsed_args)
