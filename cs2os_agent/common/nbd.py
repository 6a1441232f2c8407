"""The contract between the two ends of a warm migration's mirror.

The agent exports the target T over NBD (agent/mirror/target.py); the
conductor tells the source host's QEMU to copy into it
(sourcehost/blockcopy.py).  Both name the export and describe the
destination from here, so neither imports the other.
"""

import hashlib
from xml.sax import saxutils


def export_name(migration_id):
    """The NBD export of a migration's target: stable, and no user text."""
    return "cs2os-" + hashlib.sha256(
        str(migration_id).encode()).hexdigest()[:16]


def dest_xml(export, socket=None, host=None, port=None):
    """The copy destination: the export as a raw network disk.

    ``raw``: the export serves T's qcow2 node, i.e. guest data.
    """
    if (socket is None) == (host is None):
        raise ValueError("give either socket or host and port")
    if socket is not None:
        where = "<host transport='unix' socket=%s/>" % saxutils.quoteattr(
            socket)
    else:
        where = "<host name=%s port=%s/>" % (saxutils.quoteattr(host),
                                             saxutils.quoteattr(str(port)))
    return ("<disk type='network'><driver type='raw'/>"
            "<source protocol='nbd' name=%s>%s</source></disk>"
            % (saxutils.quoteattr(export), where))
