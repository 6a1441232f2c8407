"""A libvirt domain and connection for unit tests (no libvirtd).

One stand-in for every unit test that drives libvirt: the agent's look at
Nova's domain, the conductor's block copy, its source-end watch and the
warm flow.  It answers the calls cs2os makes, with libvirt's own values
(state numbers, error codes, block job info, the live XML's ``<mirror>``).

:func:`install` makes :func:`cs2os_agent.virt.open` return a connection
(the real ``kvmhost.KvmHost`` and ``domain.LibvirtHost`` then run on it);
:func:`route_qemu_monitor` sends ``libvirt_qemu``'s QEMU monitor event
API to the connection too, so one registry holds every callback.

A failure is scripted by method name: ``dom.fail["blockJobAbort"] =
"abort refused"`` makes that call raise a libvirtError with the message.
"""

import collections
import itertools
import re
from xml.sax import saxutils

import libvirt
import libvirt_qemu

from cs2os_agent import virt

RUNNING = libvirt.VIR_DOMAIN_RUNNING
PAUSED = libvirt.VIR_DOMAIN_PAUSED
SHUTDOWN = libvirt.VIR_DOMAIN_SHUTDOWN
SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF

# The key of QEMU monitor event registrations (libvirt_qemu's API) in
# FakeConnection.callbacks; the others are keyed by libvirt's event id.
QMP = "qemu-monitor"

# As CloudStack's KVM agent defines a VM: the root volume a file on
# /mnt/<pool>/<volume>, a CD-ROM, QEMU's DAC label.
DOMAIN_XML = """<domain type='kvm'><name>%(name)s</name>
<uuid>%(uuid)s</uuid><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file=%(file)s/><target dev=%(disk)s bus='virtio'/>%(mirror)s</disk>
<disk type='file' device='cdrom'><source file='/iso/x.iso'/>
<target dev='hdc' bus='ide'/></disk></devices>
<seclabel type='dynamic' model='dac' relabel='yes'>
<label>+64055:+64055</label><imagelabel>+64055:+64055</imagelabel>
</seclabel></domain>"""

# The export a destination XML names (cs2os_agent.common.nbd.dest_xml).
_EXPORT = re.compile(r"""\bname=(['"])(.*?)\1""")

Registration = collections.namedtuple(
    "Registration", "event dom callback opaque filter")


def error(message, code=libvirt.VIR_ERR_OPERATION_INVALID):
    """A libvirtError as libvirt raises it: code and message set."""
    exc = libvirt.libvirtError.__new__(libvirt.libvirtError)
    Exception.__init__(exc, message)
    exc.err = (code, libvirt.VIR_FROM_QEMU, message, 2, None, None, None,
               0, 0)
    return exc


class _Scripted:
    def __init__(self):
        self.fail = {}  # method name -> the message it fails with

    def _may_fail(self, method):
        if method in self.fail:
            raise error(self.fail[method])


class FakeDomain(_Scripted):
    """A domain with one file disk and, while one runs, its block job.

    ``state_``: libvirt's state number.  ``gone``: libvirt no longer
    knows the domain (a transient domain that ended): lookups fail, and
    so does every call on a handle to it.  ``xml``: a domain XML to
    return as is, instead of the CloudStack-like one.

    The job: ``job`` is ``{"cur", "end"}`` while libvirt has it,
    ``ready`` its READY flag (shown as ``<mirror ready='yes'>``),
    ``export`` the NBD export it writes to.  With ``step`` the job copies
    that many bytes at each look (blockJobInfo), and turns READY once all
    is copied while the guest runs; with 0 the test moves ``cur`` and
    ``ready`` itself.  ``on_info(dom)`` runs at each look, to script it.

    ``calls``: the calls that change something, in order, also failed
    ones: "blockCopy", "suspend", "resume", "blockJobAbort(<flags>)".
    """

    def __init__(self, name="i-2-7-VM", step=50, end=100,
                 file="/mnt/pool-1/vol-1", disk="vda", xml=None,
                 uuid="4f2b3e7c-0d1a-4a8e-9c61-2b7f0e5d9a10"):
        super().__init__()
        self._name = name
        self.uuid = uuid
        self.file = file
        self.disk = disk
        self.xml = xml
        self.state_ = RUNNING
        self.gone = False
        self.calls = []
        self.xml_reads = 0
        self.step = step
        self.end = end
        self.job = None
        self.ready = False
        self.export = None
        self.on_info = None
        # The last blockCopy's arguments.
        self.dest_xml = self.params = self.flags = None

    def _call(self, method, disk=None):
        if self.gone:
            raise error("Domain not found: no domain with matching name "
                        "'%s'" % self._name, libvirt.VIR_ERR_NO_DOMAIN)
        self._may_fail(method)
        if disk is not None and disk != self.disk:
            raise error("invalid argument: disk '%s' not found in domain"
                        % disk, libvirt.VIR_ERR_INVALID_ARG)

    def name(self):
        return self._name

    def UUIDString(self):  # noqa: N802 - libvirt's name
        return self.uuid

    def state(self, flags=0):
        self._call("state")
        return [self.state_, 0]

    def isActive(self):  # noqa: N802
        self._call("isActive")
        return int(self.state_ != SHUTOFF)

    def XMLDesc(self, flags=0):  # noqa: N802
        self._call("XMLDesc")
        self.xml_reads += 1
        if self.xml is not None:
            return self.xml
        mirror = ""
        if self.job is not None:
            source = "" if self.export is None else (
                "<source protocol='nbd' name=%s/>"
                % saxutils.quoteattr(self.export))
            mirror = "<mirror type='network' job='copy'%s>%s</mirror>" % (
                " ready='yes'" if self.ready else "", source)
        return DOMAIN_XML % {
            "name": saxutils.escape(self._name), "uuid": self.uuid,
            "file": saxutils.quoteattr(self.file),
            "disk": saxutils.quoteattr(self.disk), "mirror": mirror}

    def suspend(self):
        self.calls.append("suspend")
        self._call("suspend")
        self.state_ = PAUSED

    def resume(self):
        self.calls.append("resume")
        self._call("resume")
        self.state_ = RUNNING

    def blockCopy(self, disk, xml, params, flags):  # noqa: N802
        self.calls.append("blockCopy")
        self._call("blockCopy", disk)
        self.dest_xml, self.params, self.flags = xml, params, flags
        found = _EXPORT.search(xml)
        self.export = found.group(2) if found else None
        self.job = {"cur": 0, "end": self.end}
        self.ready = False

    def blockJobInfo(self, disk, flags):  # noqa: N802
        self._call("blockJobInfo", disk)
        if self.on_info is not None:
            self.on_info(self)
        if self.job is None:
            return {}
        info = dict(self.job, type=libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY,
                    bandwidth=0)
        if self.step:
            if self.job["cur"] < self.job["end"]:
                self.job["cur"] = min(self.job["end"],
                                      self.job["cur"] + self.step)
            elif self.state_ == RUNNING or self.ready:
                self.ready = True
        return info

    def blockJobAbort(self, disk, flags=0):  # noqa: N802
        self.calls.append("blockJobAbort(%d)" % flags)
        self._call("blockJobAbort", disk)
        self.job = None
        self.ready = False


class FakeConnection(_Scripted):
    """A connection to a libvirtd that runs ``domains``.

    ``callbacks``: every event registration, by callback id, as a
    :class:`Registration` (``event``: libvirt's event id, or :data:`QMP`).
    :meth:`emit` calls them as libvirt's event loop would.  ``opened``
    and ``closed`` count what :func:`install` and ``close`` saw.
    """

    def __init__(self, *domains, lib_version=9000000):
        super().__init__()
        self.domains = list(domains)
        self.lib_version = lib_version
        self.callbacks = {}
        self.uri = None
        self.opened = self.closed = 0
        self.keepalive = None
        self._ids = itertools.count(1)

    def _find(self, method, match, what):
        self._may_fail(method)
        for dom in self.domains:
            if match(dom) and not dom.gone:
                return dom
        raise error("Domain not found: no domain with matching %s" % what,
                    libvirt.VIR_ERR_NO_DOMAIN)

    def lookupByName(self, name):  # noqa: N802 - libvirt's name
        return self._find("lookupByName", lambda d: d.name() == name,
                          "name '%s'" % name)

    def lookupByUUIDString(self, uuid):  # noqa: N802
        return self._find("lookupByUUIDString",
                          lambda d: d.UUIDString() == uuid,
                          "uuid '%s'" % uuid)

    def getLibVersion(self):  # noqa: N802
        self._may_fail("getLibVersion")
        return self.lib_version

    def setKeepAlive(self, interval, count):  # noqa: N802
        self._may_fail("setKeepAlive")
        self.keepalive = (interval, count)
        return 0

    def close(self):
        self.closed += 1
        self._may_fail("close")
        return 0

    def _register(self, method, event, dom, callback, opaque, filter=None):
        self._may_fail(method)
        callback_id = next(self._ids)
        self.callbacks[callback_id] = Registration(event, dom, callback,
                                                   opaque, filter)
        return callback_id

    def _deregister(self, method, callback_id):
        self._may_fail(method)
        if callback_id not in self.callbacks:
            raise error("callback %s not registered" % callback_id,
                        libvirt.VIR_ERR_INVALID_ARG)
        del self.callbacks[callback_id]
        return 0

    def domainEventRegisterAny(self, dom, event, callback, opaque):  # noqa
        return self._register("domainEventRegisterAny", event, dom,
                              callback, opaque)

    def domainEventDeregisterAny(self, callback_id):  # noqa: N802
        return self._deregister("domainEventDeregisterAny", callback_id)

    # libvirt_qemu's module functions, reached through route_qemu_monitor.
    def qemuMonitorEventRegister(self, dom, event, callback, opaque,  # noqa
                                 flags):
        return self._register("qemuMonitorEventRegister", QMP, dom,
                              callback, opaque, filter=(event, flags))

    def qemuMonitorEventDeregister(self, callback_id):  # noqa: N802
        return self._deregister("qemuMonitorEventDeregister", callback_id)

    def registered(self, event):
        """The callbacks registered for ``event``, in order."""
        return [r.callback for r in self.callbacks.values()
                if r.event == event]

    def emit(self, event, dom, *args):
        """Call every callback for ``event`` on ``dom`` (or on any domain)
        with ``(conn, dom, *args, opaque)``; returns how many ran."""
        called = [r for r in list(self.callbacks.values())
                  if r.event == event and r.dom in (None, dom)]
        for r in called:
            r.callback(self, dom, *args, r.opaque)
        return len(called)


def install(monkeypatch, conn):
    """``virt.open`` returns ``conn`` (counting opens, keeping the URI);
    the event loop is not started (nothing here delivers events but
    :meth:`FakeConnection.emit`)."""

    def open_(uri):
        conn._may_fail("open")
        conn.uri = uri
        conn.opened += 1
        return conn

    monkeypatch.setattr(virt, "open", open_)
    monkeypatch.setattr(virt, "ensure_event_loop", lambda: None)
    return conn


def route_qemu_monitor(monkeypatch):
    """``libvirt_qemu``'s QEMU monitor event API, on the fake connection
    it is called with."""
    monkeypatch.setattr(
        libvirt_qemu, "qemuMonitorEventRegister",
        lambda conn, dom, event, callback, opaque, flags:
        conn.qemuMonitorEventRegister(dom, event, callback, opaque, flags))
    monkeypatch.setattr(
        libvirt_qemu, "qemuMonitorEventDeregister",
        lambda conn, callback_id: conn.qemuMonitorEventDeregister(
            callback_id))
