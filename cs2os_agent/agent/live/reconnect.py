"""After a libvirtd restart: a connection that works, the domains again.

A libvirtd restarted (or crashed) while the hop or the move runs closes
every connection the agent holds to it: each call on it, and on every
domain looked up through it, fails ("End of file while reading data",
"client socket is closed"), so an undo reading states through it would
see every domain as gone.  QEMU runs on; the next libvirtd reconnects to
each QEMU and recovers its jobs itself: it kills a domain still starting
up (B waiting for its stream, the hop's incoming copy) and cancels an
outgoing migration it had not finished, resuming A.

So before an undo decides anything, :func:`reattach` checks the
connection with a real call, reopens it if it died (waiting for the new
libvirtd to answer), looks the domains up again by UUID, and waits until
libvirt's recovery jobs on them ended (:func:`settle`): only then do
their states say who holds the guest.
"""

import time

import libvirt
from oslo_log import log as logging

from cs2os_agent import virt

LOG = logging.getLogger(__name__)

# How long a restarted libvirtd may take to answer again.
RECONNECT_WAIT = 60
# How long its recovery of a domain (a job on it) may take.
SETTLE_WAIT = 30
POLL = 0.1


def alive(conn):
    """Whether ``conn`` still reaches its libvirtd: a real round trip (a
    client notices a closed socket only on its next call)."""
    try:
        conn.getLibVersion()
    except libvirt.libvirtError:
        return False
    return True


def reopen(uri, wait=None, opener=None):
    """A new connection to ``uri``, retried while the daemon is down (a
    restart takes seconds; ``wait``: RECONNECT_WAIT by default).  Raises
    the last ``libvirt.libvirtError``."""
    opener = opener or virt.open
    deadline = time.monotonic() + (RECONNECT_WAIT if wait is None else wait)
    while True:
        try:
            return opener(uri)
        except libvirt.libvirtError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(POLL)


def by_uuid(conn, uuid):
    """The domain with ``uuid`` on ``conn``, None if there is none.
    Another error (the daemon gone again) is raised: gone is a state the
    undo acts on, not a guess."""
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if virt.no_such_domain(exc):
            return None
        raise


def settle(doms, wait=None):
    """Until no job runs on ``doms`` (None: skipped): the new libvirtd's
    recovery holds one on each domain it reconnects to.  False if one
    still runs after ``wait`` seconds (SETTLE_WAIT by default)."""
    wait = SETTLE_WAIT if wait is None else wait
    deadline = time.monotonic() + wait
    for dom in doms:
        while dom is not None:
            try:
                if dom.controlInfo()[0] != libvirt.VIR_DOMAIN_CONTROL_JOB:
                    break
            except libvirt.libvirtError:
                break  # gone: nothing left to recover
            if time.monotonic() > deadline:
                LOG.warning("libvirt still has a job on %s after %d s",
                            dom.name(), wait)
                return False
            time.sleep(POLL)
    return True


def reattach(conn, uri, uuids, opener=None, wait=None):
    """``(conn, domains, reopened)``: ``conn`` as it is if it still
    works (``domains`` None: keep the handles), else a new connection to
    ``uri`` and the domains of ``uuids`` on it (None for one that is not
    there), once libvirt's recovery of them ended.  Raises
    ``libvirt.libvirtError`` if the daemon does not answer again."""
    if alive(conn):
        return conn, None, False
    LOG.warning("The connection to %s died (libvirtd restarted?): "
                "reconnecting", uri)
    new = reopen(uri, wait, opener)
    try:
        doms = [by_uuid(new, uuid) for uuid in uuids]
        settle(doms)
    except libvirt.libvirtError:
        virt.close_quietly(new)
        raise
    return new, doms, True
