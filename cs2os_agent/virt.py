"""Small wrappers around the libvirt client library, for both processes.

The agent reads Nova's domain on its compute node
(:mod:`cs2os_agent.agent.domain`); the conductor drives the CloudStack VM's
domain on its KVM host (:mod:`cs2os_agent.sourcehost`).  What both need
from libvirt itself is here, once:

- :func:`init`, the process-wide setup, called by each service's main
  (and by the tests' session): nothing happens at import;
- one vocabulary of domain states (:data:`RUNNING`, :data:`PAUSED`,
  :data:`SHUTTING_DOWN`, :data:`SHUT_OFF`, :data:`GONE`...) and
  :func:`state`, so every message and every comparison says the same;
- :func:`open`, the only place a connection is opened (unit tests patch
  it), and :func:`ensure_event_loop` for callers that need events or
  keepalives;
- the domain XML parsed (:func:`domain_xml`), and the quiet undoing of an
  event registration (:func:`deregister_quietly`).

Errors stay ``libvirt.libvirtError``: each caller turns them into the
exception its own process reports (the agent's LibvirtError, the
conductor's KvmHostUnreachable...).
"""

import threading
from xml.etree import ElementTree

import libvirt

# The vocabulary of domain states.  The conductor's flows compare
# these strings, and the agent reports them over RPC (``domain_state``).
RUNNING = "running"
PAUSED = "paused"
# QEMU said SHUTDOWN; libvirt has not reaped it yet: it runs no guest code.
SHUTTING_DOWN = "shutting down"
SHUT_OFF = "shut off"
# The domain could not be read: a transient domain that ended vanishes.
GONE = "gone"
# States a QEMU domain hardly ever reports, named for messages.
NO_STATE = "nostate"
BLOCKED = "blocked"
CRASHED = "crashed"
PM_SUSPENDED = "pmsuspended"

_STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: NO_STATE,
    libvirt.VIR_DOMAIN_RUNNING: RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PM_SUSPENDED,
}

_event_loop_lock = threading.Lock()
_event_loop = None


def _ignore_error(ctxt, error):
    """libvirt's default handler prints every error to stderr, also the
    expected ones (a job or a transient domain gone); they are raised as
    exceptions and handled instead (as Nova does)."""


def init():
    """Process-wide setup; call once from a main, before any connection.

    Quiets libvirt's error printing.  The event loop is not started here:
    only callers that need events or keepalives start it
    (:func:`ensure_event_loop`), so the agent runs without one as before.
    Calling it again is harmless.
    """
    libvirt.registerErrorHandler(_ignore_error, None)


def ensure_event_loop():
    """Register libvirt's default event loop once and run it on a daemon
    thread.

    Keepalives and domain events need it, registered before the
    connection they serve is opened.
    """
    global _event_loop
    with _event_loop_lock:
        if _event_loop is not None:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run():
            while True:
                libvirt.virEventRunDefaultImpl()

        _event_loop = threading.Thread(target=run, name="libvirt-events",
                                       daemon=True)
        _event_loop.start()


def open(uri):  # noqa: A001 - libvirt's own name
    """A new connection to the libvirtd at *uri*.

    The only place a connection is opened, so unit tests patch this.
    Raises ``libvirt.libvirtError``.
    """
    return libvirt.open(uri)


def close_quietly(conn):
    """Close a connection of ours, if any; returns None for the caller to
    store.  A connection that died (the far libvirtd went away) fails to
    close, and there is nothing left to release then."""
    if conn is not None:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass


def no_such_domain(exc):
    """Whether the libvirtError *exc* says the domain does not exist."""
    return exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN


def state_name(code):
    """The vocabulary's name of libvirt's state number *code*."""
    return _STATE_NAMES.get(code, "unknown(%d)" % code)


def state(dom):
    """The domain's state, from the vocabulary; :data:`GONE` when it can
    no longer be read."""
    try:
        code = dom.state()[0]
    except libvirt.libvirtError:
        return GONE
    return state_name(code)


def parse_xml(text):
    """An ElementTree of a domain XML that libvirtd returned.

    Not for user input: the XML comes from libvirtd.
    """
    return ElementTree.fromstring(text)  # noqa: S314


def domain_xml(dom):
    """The domain's live XML, parsed.  Raises ``libvirt.libvirtError``."""
    return parse_xml(dom.XMLDesc(0))


def deregister_quietly(deregister, callback_id):
    """Undo a libvirt event registration, if there was one; returns None
    for the caller to store.  A connection already gone has dropped the
    callback with it, so its error is not one."""
    if callback_id is not None:
        try:
            deregister(callback_id)
        except libvirt.libvirtError:
            pass
