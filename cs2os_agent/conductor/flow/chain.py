"""The overlay's backing chain, as the files say it.

CloudStack's KVM volumes are an overlay A on the template B.  An
interrupted volume snapshot (or an older migration between pools) can leave
layers between them: A -> I1 -> ... -> In -> B.  The template is the file at
the bottom, the one without a backing file; it stays the Glance image.  The
layers' data belongs to the volume: the agent copies them with A and merges
them into it (agent/overlay.py).  Every file of the chain is read through
the transport and must be on the volume's pool: a header cannot send the
reader anywhere else.
"""

import posixpath

from cs2os_agent import qcow2
from cs2os_agent import transfer
from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import sources

MAX_LAYERS = 16


def walk(ctx, vm, overlay_header, volume=None):
    """(template path or None, [layer source, top-down]) below the overlay
    whose header is ``overlay_header``: the root volume's, or
    ``volume``'s (a data disk, discovery's description)."""
    if not overlay_header.has_backing:
        return None, []
    what = "data disk %s" % volume["name"] if volume else "root volume"
    volume = volume or dict(vm["root_volume"], file=vm["overlay_path"])
    pool = volume["storage"]
    seen = {posixpath.normpath(volume["file"])}
    layers = []
    path = overlay_header.backing_file
    while True:
        # Refuses a file outside the volume's pool.
        sources.pool_relative(path, pool["id"])
        normal = posixpath.normpath(path)
        if normal in seen:
            raise exception.Invalid(
                reason="the backing chain of CloudStack VM %s's %s loops: %s "
                "comes twice" % (vm["name"], what, path))
        seen.add(normal)
        source = sources.source_for(ctx.conf, vm, path, pool)
        with transfer.get_source(source, ctx.conf) as src:
            header = qcow2.inspect_header(
                src.read_header(qcow2.HEADER_BYTES), src.describe())
        if not header.has_backing:
            return path, layers
        if len(layers) == MAX_LAYERS:
            raise exception.Invalid(
                reason="the %s of CloudStack VM %s has more than %d layers "
                "between it and its template" % (what, vm["name"],
                                                 MAX_LAYERS))
        layers.append(source)
        path = header.backing_file
