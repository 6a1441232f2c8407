"""A CloudStack KVM host's libvirt URI, checked, and a connection to it.

Both processes open KVM hosts: the conductor for a warm migration's block
copy (``[cloudstack] kvm_libvirt_uri``), the agent for a live migration's
hop (``[live] kvm_libvirt_uri``); '{host}' is the host's address from
CloudStack.  The host key must be verified: an URI that turns
verification off is refused before it is opened.  A remote connection
gets libvirt keepalives (5 s, 3 missed: a dead host or SSH session is
noticed in ~20 s instead of hanging a call); they need an event loop in
the process, registered before the connection opens
(:func:`cs2os_agent.virt.ensure_event_loop`).
"""

import urllib.parse

import libvirt
from oslo_log import log as logging

from cs2os_agent import virt
from cs2os_agent.common import exception
from cs2os_agent.common import ssh_pin

LOG = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
# libvirt 9.0's libssh transport stalls every reply over 4 KiB (a domain's
# XML) until the next keepalive, and when our keepalive timer ends the
# stall it leaves a socket watch pointing into a returned stack frame: the
# next call on the connection segfaulted the conductor (tests/functional/
# test_kvm_ssh_transport.py).  The ssh transport runs OpenSSH instead.
_REFUSED_SCHEMES = ("libssh", "libssh2")


def _host_part(host):
    if not host or any(c in host for c in "/?#@[] "):
        raise exception.Invalid(
            reason="CloudStack gave no usable address for the KVM host "
            "(%r)" % (host,))
    return "[%s]" % host if ":" in host else host


def uri_for(template, host, option="[cloudstack] kvm_libvirt_uri"):
    """The libvirt URI of ``host``; refuses one without host key checks.
    ``option``: where ``template`` comes from, for the messages."""
    if "{host}" not in template:
        raise exception.Invalid(reason="%s must contain {host}" % option)
    uri = template.replace("{host}", _host_part(host))
    parts = urllib.parse.urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    query = urllib.parse.parse_qs(parts.query)
    if transport in _REFUSED_SCHEMES:
        raise exception.Invalid(
            reason="%s uses qemu+%s://: libvirt's %s transport stalls every "
            "reply over 4 KiB until a keepalive and can crash the process "
            "(libvirt 9.0); use qemu+ssh://...?keyfile=KEY&known_hosts=FILE"
            % (option, transport, transport))
    if transport == "ssh":
        if query.get("no_verify", ["0"])[-1] not in ("0", ""):
            raise exception.Invalid(
                reason="%s sets no_verify: the KVM host's key must be "
                "verified" % option)
        if "known_hosts" in query:
            uri = _pinned(parts, query, option)
    return uri


def _pinned(parts, query, option):
    """``known_hosts=FILE``, which libvirt's ssh transport does not take,
    becomes ``command=`` an ssh that trusts that file alone (ssh_pin)."""
    if "command" in query:
        raise exception.Invalid(
            reason="%s sets both known_hosts and command: known_hosts=FILE "
            "makes the command" % option)
    known_hosts = query.pop("known_hosts")[-1]
    query["command"] = [ssh_pin.command_for(known_hosts)]
    return urllib.parse.urlunsplit(parts._replace(
        query=urllib.parse.urlencode(query, doseq=True, safe="/")))


def redact(uri):
    """The URI for messages: scheme, user, host and path (no options)."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(parts._replace(query="", fragment=""))


def open_host(uri):
    """A new connection to the KVM host at ``uri`` (uri_for's), with
    keepalives when remote.  Raises ``libvirt.libvirtError``."""
    virt.ensure_event_loop()
    conn = virt.open(uri)
    if "+" in urllib.parse.urlsplit(uri).scheme:
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except libvirt.libvirtError:
            LOG.warning("No keepalive on %s", redact(uri), exc_info=True)
    return conn
