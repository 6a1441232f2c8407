"""The first hop: A onto the Nova compute host by libvirt's live migration.

Across hosts the live move runs in two hops (recipes/live-into-nova): A
migrates live to the Nova host under a temporary name, UUID unchanged
(libvirt cannot change it), its disks copied onto Nova's instance paths;
then the same-host move (:mod:`.move`) carries it into Nova's domain B on
the shared file.  :func:`hop` is the first; :func:`hop_back` its undo.

The flags and params, and why: :mod:`.hop_spec`.  The migration is
client-managed: the caller holds a connection to each libvirtd.

Never two running copies: libvirt pauses A only for the switch-over and
resumes the destination only once A's QEMU completed.  After any error
A's state is checked: libvirt resumes it on a failed migration; if it is
paused and nothing with its UUID is active on the destination, it is
resumed here.  A copy active on the destination, or A nowhere, is
:class:`errors.HopIncomplete`: not undone.

A libvirtd restarted on either side during the hop kills this process's
connection to it; the check after an error first reopens it and looks
A up again by UUID (:mod:`.reconnect`).  The restarted libvirtd itself
kills an incoming copy that had not started (destination) or cancels
the outgoing migration and resumes A (source): the hop then ends as
:class:`errors.HopFailed`, A running on the source.
"""

import dataclasses
import threading
import time

import libvirt
from oslo_log import log as logging

from cs2os_agent import virt
from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import hop_spec
from cs2os_agent.agent.live import preflight
from cs2os_agent.agent.live import reconnect

_message = errors.libvirt_message

LOG = logging.getLogger(__name__)

_SECURE = libvirt.VIR_DOMAIN_XML_SECURE


@dataclasses.dataclass(frozen=True)
class HopResult:
    domain: object  # the temporary domain, running on the destination
    source_name: str  # A's name on the source (the undo gives it back)
    source_disks: dict  # target dev -> A's own disk path on the source
    source_formats: dict  # target dev -> A's own disk format
    source_files: dict  # destination chardev path -> A's path (undo)
    downtime_ms: object  # QEMU's pause, libvirt's completed-job stats
    elapsed_ms: object
    memory_bytes: object
    seconds: float


def _host_uuid(conn):
    return virt.parse_xml(conn.getCapabilities()).findtext("host/uuid")


def _uri(conn, default="the destination"):
    try:
        return conn.getURI()
    except libvirt.libvirtError:
        return default


class _Hop:
    def __init__(self, source_conn, source, dest_conn):
        self.source_conn, self.source = source_conn, source
        self.dest_conn = dest_conn
        self.uuid = source.UUIDString()
        self.names = {"source": source.name(), "dest": _uri(dest_conn)}
        # Where to reconnect after a libvirtd restart (None: never).
        self.uris = {"source": _uri(source_conn, None),
                     "dest": _uri(dest_conn, None)}
        self.timed_out = False

    def refused(self, reason):
        return errors.HopRefused(reason=reason, **self.names)

    def check(self, temp_name, a_live):
        if virt.state(self.source) != virt.RUNNING:
            raise hop_spec.Refused("A is %s, not running"
                                   % virt.state(self.source))
        if self.source.isPersistent() and self.source.autostart():
            raise hop_spec.Refused("A is persistent and autostarts: a reboot "
                                   "of the source host would start a second "
                                   "copy")
        if _host_uuid(self.source_conn) == _host_uuid(self.dest_conn):
            raise hop_spec.Refused("the destination is the source host itself")
        for dom in self.dest_conn.listAllDomains(0):
            name, same = dom.name(), dom.UUIDString() == self.uuid
            if same and dom.isActive():
                raise hop_spec.Refused("A's UUID already runs there as %s"
                                       % name)
            if same and name != temp_name:
                raise hop_spec.Refused("A's UUID is defined there as %s"
                                       % name)
            # (a defined A under its own name is where the undo lands)
            if not same and name == temp_name:
                raise hop_spec.Refused("name taken: %s is there with UUID "
                                       "%s" % (name, dom.UUIDString()))
        a_root = virt.parse_xml(a_live)
        cpu = a_root.find("cpu")
        if cpu is None or cpu.get("mode") != "host-passthrough":
            # host-passthrough cannot be compared: libvirt migrates it
            # as it is, the two hosts' CPUs must be the same model.
            try:
                preflight.check_cpu(self.dest_conn, a_root, False)
            except errors.LiveMoveRefused as exc:
                # "A's CPU (X) is incompatible with this host's"
                raise hop_spec.Refused("on the destination host: %s"
                                       % exc.kwargs["reason"]) from None

    def dest_copy(self):
        """The domain with A's UUID on the destination, or None."""
        try:
            return self.dest_conn.lookupByUUIDString(self.uuid)
        except libvirt.libvirtError:
            return None

    def abort(self):
        """Timeout: cancel A's migration job, on a connection of its own
        (the migration call holds the first)."""
        self.timed_out = True
        LOG.warning("Hop of %(source)s to %(dest)s timed out: aborting",
                    self.names)
        try:
            conn = virt.open(self.source_conn.getURI())
            try:
                conn.lookupByUUIDString(self.uuid).abortJob()
            finally:
                conn.close()
        except libvirt.libvirtError as exc:
            LOG.warning("Cannot abort the hop: %s", _message(exc))

    def reattach(self, reason):
        """Each side's connection working again after a libvirtd restart
        (:mod:`.reconnect`), A looked up again on the source's."""
        for side in ("source", "dest"):
            if self.uris[side] is None:
                continue
            try:
                conn, doms, reopened = reconnect.reattach(
                    getattr(self, side + "_conn"), self.uris[side],
                    [self.uuid])
            except libvirt.libvirtError as exc:
                raise errors.HopIncomplete(
                    reason="%s; the %s's libvirtd does not answer since it "
                    "went away (%s): nothing was undone, look for the guest "
                    "(UUID %s) on both hosts" % (
                        reason, "source" if side == "source" else
                        "destination", _message(exc), self.uuid),
                    **self.names) from None
            if reopened:
                setattr(self, side + "_conn", conn)
                if side == "source" and doms[0] is not None:
                    self.source = doms[0]

    def after_failure(self, exc, reason):
        """A running, nothing active on the destination: raise refused or
        failed.  Returns the destination domain if the hop did finish."""
        self.reattach(reason)
        a_state, theirs = virt.state(self.source), self.dest_copy()
        their_state = virt.state(theirs) if theirs else virt.GONE
        active = their_state not in (virt.GONE, virt.SHUT_OFF)
        if a_state == virt.PAUSED and not active:
            LOG.warning("A left paused after a failed hop: resuming it")
            try:
                self.source.resume()
            except libvirt.libvirtError as err:
                LOG.warning("Cannot resume A: %s", _message(err))
            a_state = virt.state(self.source)
        if a_state == virt.RUNNING and not active:
            classified = hop_spec.classify(exc) if exc is not None else None
            if classified:
                raise self.refused(classified)
            raise errors.HopFailed(reason=reason, **self.names)
        if a_state in (virt.GONE, virt.SHUT_OFF) and \
                their_state == virt.RUNNING:
            LOG.warning("The hop reported %s, but the guest runs on the "
                        "destination: finished", reason)
            return theirs
        raise errors.HopIncomplete(
            reason="%s; A is %s on the source, the destination's copy is %s"
            % (reason, a_state, their_state), **self.names)


def hop(source_conn, source, dest_conn, dest_disks, temp_name, formats=None,
        files=None, migrate_address=None, bandwidth_mib=None,
        incremental=False, auto_converge=False, timeout=600):
    """Migrate running ``source`` (A) live to ``dest_conn`` as ``temp_name``.

    Client-managed (not peer-to-peer): this process holds both
    connections and drives libvirt's migration protocol between them, so
    A's libvirtd never logs in to the destination's (it needs no
    credentials for it); only the destination's QEMU is reached by A's,
    at ``migrate_address``.  ``dest_disks``: target dev -> destination
    path, each file created by the caller as Nova lays it out, of A's
    virtual size.  Returns a :class:`HopResult` whose ``domain`` runs
    with A's UUID.  Raises :class:`errors.HopRefused` /
    :class:`errors.HopFailed` with A running on the source, or
    :class:`errors.HopIncomplete`.
    """
    run = _Hop(source_conn, source, dest_conn)
    names = run.names
    try:
        a_live = source.XMLDesc(_SECURE)
        a_xml = source.XMLDesc(_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        xml = hop_spec.dest_xml(a_xml, dest_disks, formats, files)
        run.check(temp_name, a_live)
    except hop_spec.Refused as exc:
        raise run.refused(str(exc)) from None
    except libvirt.libvirtError as exc:
        raise run.refused("libvirt: %s" % _message(exc)) from None
    originals, formats_back = {}, {}
    for disk in virt.parse_xml(a_live).findall("devices/disk"):
        dev = disk.find("target").get("dev")
        if dev in dest_disks:
            src = disk.find("source")
            originals[dev] = src.get("file") or src.get("dev")
            formats_back[dev] = disk.find("driver").get("type")
    params = hop_spec.migrate_params(xml, temp_name, dest_disks,
                                     migrate_address, bandwidth_mib)
    flags = hop_spec.migrate_flags(incremental, auto_converge)
    LOG.info("Hop of %s to %s as %s (flags %#x)", names["source"],
             names["dest"], temp_name, flags)
    watchdog = threading.Timer(timeout, run.abort)
    watchdog.daemon = True
    started = time.monotonic()
    watchdog.start()
    try:
        source.migrate3(dest_conn, params, flags)
        dom = run.dest_conn.lookupByName(temp_name)
    except libvirt.libvirtError as exc:
        dom = run.after_failure(exc, "%slibvirt: %s" % (
            "timed out after %d s, " % timeout if run.timed_out else "",
            _message(exc)))
    finally:
        watchdog.cancel()
    seconds = time.monotonic() - started
    if dom.UUIDString() != run.uuid or virt.state(dom) != virt.RUNNING or \
            virt.state(run.source) == virt.RUNNING:
        dom = run.after_failure(None, "after the migration %s is %s with "
                                "UUID %s, A is %s" % (
                                    temp_name, virt.state(dom),
                                    dom.UUIDString(),
                                    virt.state(run.source)))
    try:
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        stats = {}
    return HopResult(
        domain=dom, source_name=names["source"], source_disks=originals,
        source_formats=formats_back,
        source_files={v: k for k, v in (files or {}).items()},
        downtime_ms=stats.get("downtime"),
        elapsed_ms=stats.get("time_elapsed"),
        memory_bytes=stats.get("memory_total"), seconds=seconds)


def hop_back(result, source_conn, **kwargs):
    """The undo: the temporary domain back to the source under A's name,
    onto A's own disk files (a full copy: the guest wrote to the
    destination's since).  ``source_conn``: the source's libvirtd;
    ``kwargs`` as for :func:`hop` (``migrate_address``: the source host's
    address, where its QEMU listens now).  A persistent A's definition
    (shut off) takes the guest back."""
    dom = result.domain
    kwargs.setdefault("files", dict(result.source_files))
    return hop(dom.connect(), dom, source_conn, result.source_disks,
               result.source_name, formats=dict(result.source_formats),
               **kwargs)
