"""Preflight: what a migration of one VM would do and what would stop it.

``create_migration`` with ``"dry_run": true`` answers with :func:`report`
instead of recording anything: the checks validate runs (the VM and its
volumes, the root file's header and chain, the owner's Keystone project
and cs2os's access to it, the flavor, the host and its agent, the NIC plan
with its MAC/IP conflicts, the data disks' volumes, their types and the
project's Cinder quota), and what only a preflight asks: whether the
template is in Glance already, the project's Nova quota, whether another
migration holds the VM, how many bytes would move and for how long.  It
reads from both clouds and writes to neither, nor to the database.

Each finding is ``critical`` (the migration would fail: it names why) or a
``warning`` (it would go on, and the operator should know).  A check that
needs what an earlier one could not find is left out, not guessed.
"""

import statistics

from oslo_log import log as logging

from cs2os_agent import transfer
from cs2os_agent.cloudstack import discovery
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor.flow import admission
from cs2os_agent.conductor.flow import datadisks
from cs2os_agent.conductor.flow import image
from cs2os_agent.conductor.flow import livesteps
from cs2os_agent.conductor.flow import nics
from cs2os_agent.conductor.flow import owner
from cs2os_agent.conductor.flow import placement
from cs2os_agent.conductor.flow import prepare
from cs2os_agent.conductor.flow import rootdisk
from cs2os_agent.conductor.flow import sources
from cs2os_agent.openstack import volumes as openstack_volumes

LOG = logging.getLogger(__name__)

CRITICAL, WARNING = "critical", "warning"
# The earlier migrations whose copy rate the estimate takes the median of.
RATE_SAMPLE = 20
# Without any: a rate this machine kind's transports reach (README,
# Performance), said to be an assumption.
ASSUMED_RATE = 100 * 1024 * 1024


class _Stop(Exception):
    """A critical finding later checks depend on."""


class DryRun:
    """What the flow's checks read of a FlowContext, and nothing to write
    with: a check that tried to record something would fail loudly."""

    def __init__(self, request, conf, clients):
        self.conf = conf
        self.clients = clients
        self.admin_context = cs2os_context.get_admin_context()
        self.id = None
        self.migration = {
            "source_ref": request["source"], "mode": request["mode"],
            "flavor": request["flavor"], "target_host": request["host"],
            "options": {k: request[k] for k in (
                "networks", "drop_unmapped_nics", "project",
                "keep_snapshots", "config_drive", "volume_type", "aggregate",
                "project_map", "flavor_map", "volume_type_map", "cutover",
                "live_fallback")
                if request.get(k)},
            "target_project_id": None,
        }
        self.events = []

    @property
    def openstack(self):
        return self.clients.in_project(self.migration["target_project_id"])[0]

    @property
    def network(self):
        return self.clients.in_project(self.migration["target_project_id"])[1]

    @property
    def volumes(self):
        return openstack_volumes.VolumeClient(self.openstack.conn)

    def event(self, step, message, kind="info"):
        self.events.append(message)


class Report:
    def __init__(self, request):
        self.body = {"source": request["source"], "mode": request["mode"],
                     "findings": [], "plan": {}}

    def finding(self, check, severity, message):
        self.body["findings"].append(
            {"check": check, "severity": severity, "message": message})

    def plan(self, **values):
        self.body["plan"].update(values)

    def check(self, name, fn, *args, stop=True):
        """``fn(*args)``; an Invalid is the check's critical finding (and
        ends the report when later checks need its answer)."""
        try:
            return fn(*args)
        except exception.Cs2osException as exc:
            # An Invalid's reason alone: "Invalid request:" says nothing
            # in a report of what would fail.
            reason = exc.kwargs.get("reason") if type(
                exc) is exception.Invalid else None
            self.finding(name, CRITICAL, str(reason or exc))
            if stop:
                raise _Stop() from None
            return None

    def done(self):
        critical = [f for f in self.body["findings"]
                    if f["severity"] == CRITICAL]
        self.body["ok"] = not critical
        self.body["summary"] = (
            "%d critical, %d warnings" % (
                len(critical), len(self.body["findings"]) - len(critical)))
        return self.body


def report(request, conf, clients, db):
    """The preflight report of validated request ``request`` (dict)."""
    ctx = DryRun(request, conf, clients)
    out = Report(request)
    try:
        _checks(ctx, out, db)
    except _Stop:
        pass
    # What the flow's own checks would have recorded as events (the
    # root volume's internal snapshots, say), whatever stopped the report.
    for message in ctx.events:
        out.finding("disk", WARNING, message)
    return out.done()


def _checks(ctx, out, db):
    cs = ctx.clients.cloudstack
    vm = out.check("vm", discovery.describe_vm, cs,
                   ctx.migration["source_ref"])
    out.plan(vm={"id": vm["id"], "name": vm["name"], "state": vm["state"],
                 "owner": owner.describe(vm)})
    for problem in discovery.validate_vm(vm):
        out.finding("vm", CRITICAL, problem)
    active = db.active_migration_of(vm["id"])
    if active is not None:
        out.finding("vm", CRITICAL, "migration %s (%s) is already moving "
                    "this VM" % (active["id"], active["state"]))
    for resource, limit in admission.limits(ctx.conf, ctx.migration,
                                            vm).items():
        holders = db.slot_holders(resource)
        if len(holders) >= limit:
            out.finding("limits", WARNING, "would wait for a slot: %s has "
                        "%d of %d migrations in flight" % (
                            resource, len(holders), limit))
    disk = out.check("disk", _disk, ctx, vm)
    if ctx.migration["mode"] == states.LIVE:
        _live(ctx, out, vm, disk)
    project, chosen_by = out.check("project", owner.target_project, ctx, vm)
    ctx.migration["target_project_id"] = project.id
    out.plan(project={"id": project.id, "name": project.name,
                      "chosen_by": chosen_by})
    out.check("project", owner.check_access, ctx, project, stop=False)
    flavor = out.check("flavor", _flavor, ctx, out, vm, disk.header,
                       stop=False)
    host = ctx.migration["target_host"]
    aggregate = placement.requested(ctx.migration)
    if aggregate:
        out.check("host", _aggregate, ctx, out, db, vm, aggregate,
                  stop=False)
    elif host:
        # No agent is asked for on a host that is not Nova's (its answer
        # would only be a time-out, seconds later).
        if out.check("host", _compute_host, ctx, host, stop=False):
            out.check("host", prepare.require_agent, ctx, host, stop=False)
        out.plan(host=host)
    else:
        out.plan(host="chosen by Nova's scheduler")
    if flavor is not None:
        _quota(ctx, out, project, flavor)
    out.check("network", _nics, ctx, out, vm, stop=False)
    data_disk_bytes = out.check("data_disks", _data_disks, ctx, out, vm,
                                stop=False)
    template_bytes = out.check("image", _template, ctx, out, vm,
                               disk.template_path, stop=False)
    _bytes_and_time(ctx, out, db, disk, template_bytes, data_disk_bytes)


def _live(ctx, out, vm, disk):
    """Live mode's refusals (flow/livesteps.py): critical, or with
    live_fallback a warning that the migration would go warm."""
    options = ctx.migration["options"]
    fallback = options.get("live_fallback")
    for reason in livesteps.reasons(vm, vm.get("datadisks") or [],
                                    disk.layers, options):
        out.finding("live", WARNING if fallback else CRITICAL, reason + (
            "; it would fall back to warm mode (live_fallback)"
            if fallback else ""))


def _disk(ctx, vm):
    """The root volume as validate reads it (and its snapshots' word)."""
    disk = rootdisk.read(ctx, vm)
    prepare.snapshots_outcome(ctx, vm, disk.header, disk.layers)
    return disk


def _aggregate(ctx, out, db, vm, ref):
    """The aggregate's hosts as admission would see them: critical when
    none can take the migration, a warning naming those that cannot, and
    one when every usable host is at its limit."""
    found = placement.require(placement.survey(ctx, ref))
    out.plan(host="chosen at admission among the %d usable hosts of host "
             "aggregate %s: %s" % (len(found.usable), found.name,
                                   ", ".join(found.usable)))
    if found.unusable:
        out.finding("host", WARNING, "host aggregate %s: %d of %d hosts "
                    "cannot take it: %s" % (
                        found.name, len(found.unusable), len(found.hosts),
                        placement.describe_unusable(found)))
    full = {}
    for host in found.usable:
        for resource, limit in admission.limits(
                ctx.conf, dict(ctx.migration, target_host=host),
                vm).items():
            if resource.startswith("compute:") and \
                    len(db.slot_holders(resource)) >= limit:
                full[host] = limit
    if full and len(full) == len(found.usable):
        out.finding("limits", WARNING, "would wait for a slot: every usable "
                    "host of host aggregate %s is at its limit of %s "
                    "migrations in flight" % (found.name, "/".join(
                        map(str, sorted(set(full.values()))))))


def _compute_host(ctx, host):
    ctx.clients.openstack.check_compute_host(host)
    return True


def _flavor(ctx, out, vm, header):
    flavor, chosen_by = prepare.choose_flavor(ctx, vm, header.virtual_size)
    out.plan(flavor={"id": flavor.id, "name": flavor.name,
                     "vcpus": flavor.vcpus, "ram_mib": flavor.ram,
                     "disk_gib": flavor.disk, "chosen_by": chosen_by})
    return flavor


def _quota(ctx, out, project, flavor):
    try:
        headroom = ctx.clients.openstack.quota_headroom(project.id)
    except exception.OpenStackError as exc:
        out.finding("quota", WARNING, "Nova's quota of project %s could not "
                    "be read: %s" % (project.name,
                                     exc.kwargs.get("reason")))
        return
    need = {"instances": 1, "cores": flavor.vcpus, "ram": flavor.ram}
    for name, amount in need.items():
        limit, used = headroom.get(name, (-1, 0))
        if limit >= 0 and used + amount > limit:
            out.finding("quota", CRITICAL, "project %s has %d of %d %s in "
                        "use; this server needs %d more" % (
                            project.name, used, limit, name, amount))


def _nics(ctx, out, vm):
    options = ctx.migration["options"]
    network_map = dict(ctx.conf.cloudstack.network_map,
                       **(options.get("networks") or {}))
    planned, dropped = nics.plan(
        None, vm.get("nics") or [], network_map,
        options.get("drop_unmapped_nics", False), ctx.network)
    out.plan(nics=[{k: n.get(k) for k in (
        "mac", "ip", "cloudstack_network", "neutron_network")}
        for n in planned])
    for description in dropped:
        out.finding("network", WARNING, "dropped: %s" % description)


def _data_disks(ctx, out, vm):
    """The volumes the data disks would become (their types and the
    project's Cinder quota checked as validate does); the bytes their
    files hold."""
    planned = datadisks.plan(ctx, vm)
    total = 0
    shown = []
    for disk in planned:
        total += (size := _disk_bytes(ctx, disk))
        shown.append({"name": disk["name"], "cloudstack_id":
                      disk["cloudstack_id"], "volume_size_gib":
                      disk["size_gib"], "volume_type": disk["volume_type"]
                      or "Cinder's default", "volume_type_chosen_by":
                      disk.get("volume_type_chosen_by"),
                      "files": len(disk["chain"]),
                      "bytes": size})
    if shown:
        out.plan(data_disks=shown)
    return total


def _disk_bytes(ctx, disk):
    """The bytes a data disk's files hold; for a raw one (RBD primary
    storage, which only agents can read) its size, the most it moves."""
    if disk.get("format") == "raw":
        return disk["virtual_size"]
    size = 0
    for source in disk["chain"]:
        with transfer.get_source(source, ctx.conf) as src:
            size += src.size()
    return size


def _template(ctx, out, vm, template_path):
    """The bytes the template image would upload (0: in Glance already)."""
    if template_path is None:
        out.plan(image="a blank placeholder (the volume holds the whole "
                 "disk)")
        return 0
    source = sources.source_for(ctx.conf, vm, template_path)
    with transfer.get_source(source, ctx.conf) as src:
        fingerprint = image._fingerprint_key(src.fingerprint())
        size = src.size()
    found = ctx.clients.openstack.find_template_image(vm["template"]["id"],
                                                      fingerprint)
    if found is not None:
        out.plan(image={"reused": found.id})
        return 0
    out.plan(image={"upload_bytes": size})
    return size


def _bytes_and_time(ctx, out, db, disk, template_bytes, data_disk_bytes):
    disk_bytes = disk.source_bytes
    layer_bytes = 0
    for layer in disk.layers:
        with transfer.get_source(layer, ctx.conf) as src:
            layer_bytes += src.size()
    template_bytes = template_bytes or 0  # None: the image check failed
    data_disk_bytes = data_disk_bytes or 0
    total = disk_bytes + layer_bytes + template_bytes + data_disk_bytes
    rate, basis = _rate(db)
    estimate = {"bytes_to_move": total, "disk_bytes": disk_bytes,
                "layer_bytes": layer_bytes, "template_bytes": template_bytes,
                "data_disk_bytes": data_disk_bytes,
                "copy_seconds": round(total / rate, 1),
                "rate_bytes_per_second": int(rate), "rate_basis": basis}
    if disk.header.snapshots:
        estimate["note"] = (
            "the root volume holds %d internal snapshots: bytes_to_move "
            "counts the whole file; without keep_snapshots the data only "
            "they hold is not moved" % disk.header.snapshots)
    out.plan(estimate=estimate)


def _rate(db):
    """(bytes per second, what it rests on) for the estimate."""
    done = db.list_migrations({"state": states.SUCCEEDED},
                              limit=RATE_SAMPLE)
    rates = [m["rate_bps"] for m in done if m.get("rate_bps")]
    if rates:
        return (statistics.median(rates),
                "median of the last %d migrations' copy rate" % len(rates))
    return ASSUMED_RATE, "assumed (no migration finished here yet)"
