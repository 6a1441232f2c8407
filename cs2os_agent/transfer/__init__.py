"""Overlay transports, chosen by the ``transport`` key of a source dict."""

from cs2os_agent.common import exception
from cs2os_agent.transfer import path


def _path_source(source, conf):
    return path.PathSource(
        source["path"],
        allowed_roots=conf.agent.allowed_source_roots,
        chunk_size=conf.transfer.chunk_size_kib * 1024,
    )


def _ssh_source(source, conf):
    from cs2os_agent.transfer import ssh

    return ssh.SshSource.from_request(source, conf)


def _nfs_source(source, conf):
    from cs2os_agent.transfer import nfs

    return nfs.NfsSource.from_request(source, conf)


def _rbd_source(source, conf):
    from cs2os_agent.transfer import rbd

    return rbd.RbdSource.from_request(source, conf)


# transport name -> (required keys, optional keys, factory)
_TRANSPORTS = {
    "path": ({"path"}, set(), _path_source),
    "ssh": ({"host", "path"}, {"port", "user"}, _ssh_source),
    "nfs": ({"server", "export", "path"}, {"version"}, _nfs_source),
    "rbd": ({"pool", "image", "monitors"}, {"snapshot"}, _rbd_source),
}


def supported_transports():
    return sorted(_TRANSPORTS)


def get_source(source, conf):
    """Build the OverlaySource a ``sync_overlay`` ``source`` dict names.

    Raises :class:`~cs2os_agent.common.exception.InvalidSource` naming the
    problem for anything but a well-formed dict of a known transport.
    """
    if not isinstance(source, dict):
        raise exception.InvalidSource(
            source=repr(source), reason="a source must be a dict"
        )
    name = source.get("transport")
    if name not in _TRANSPORTS:
        raise exception.InvalidSource(
            source=name,
            reason="unknown transport; supported: %s"
            % ", ".join(supported_transports()),
        )
    required, optional, factory = _TRANSPORTS[name]
    keys = set(source) - {"transport"}
    missing = required - keys
    unknown = keys - required - optional
    if missing or unknown:
        reason = []
        if missing:
            reason.append("missing %s" % ", ".join(sorted(missing)))
        if unknown:
            reason.append("unknown %s" % ", ".join(sorted(unknown)))
        raise exception.InvalidSource(source=name, reason="; ".join(reason))
    return factory(source, conf)
