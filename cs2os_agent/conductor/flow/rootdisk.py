"""What the root volume is, as validate and the preflight read it.

On NFS primary storage: a qcow2 file whose header (read through the
transport) names its template and layers (chain.py).  On CloudStack RBD
primary storage: one raw image, a clone of its template's snapshot, that
the agent copies whole as the guest sees it and stages as a standalone
qcow2 (agent/rawroot.py); the server boots on the placeholder image, and
its size is CloudStack's, so the conductor needs no Ceph credentials.
"""

import dataclasses

from cs2os_agent import qcow2
from cs2os_agent import transfer
from cs2os_agent.cloudstack import discovery
from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor.flow import chain
from cs2os_agent.conductor.flow import sources


@dataclasses.dataclass
class RootDisk:
    source: dict  # where the agent reads it (transport source)
    header: qcow2.Header
    template_path: str  # None: no template (standalone, or raw)
    layers: list
    fmt: str  # qcow2, or raw
    source_bytes: int  # the file's (or image's) size


def read(ctx, vm):
    root = vm["root_volume"]
    if (root.get("storage") or {}).get("type") == discovery.RBD:
        return _raw(ctx, vm, root)
    source = sources.source_for(ctx.conf, vm, vm["overlay_path"])
    with transfer.get_source(source, ctx.conf) as src:
        header = qcow2.inspect_header(
            src.read_header(qcow2.HEADER_BYTES), src.describe())
        size = src.size()
    # The template as the files say, not as names suggest, and the layers
    # between it and the volume, if any.
    template_path, layers = chain.walk(ctx, vm, header)
    if layers and ctx.migration["mode"] == states.WARM:
        raise exception.Invalid(
            reason="the root volume of CloudStack VM %s has %d layer(s) "
            "between it and its template; a warm migration mirrors the "
            "volume onto the template only: use mode cold"
            % (vm["name"], len(layers)))
    return RootDisk(source, header, template_path, layers, "qcow2", size)


def _raw(ctx, vm, root):
    if ctx.migration["mode"] == states.WARM:
        raise exception.Invalid(
            reason="the root volume of CloudStack VM %s is on RBD primary "
            "storage; a warm migration mirrors qcow2 volumes on NFS only "
            "so far: use mode cold" % vm["name"])
    size = int(root.get("size") or 0)
    if size <= 0:
        raise exception.Invalid(
            reason="CloudStack gives the root volume of VM %s no size"
            % vm["name"])
    source = sources.rbd_source(root["storage"], root["path"])
    return RootDisk(source, qcow2.Header(virtual_size=size,
                                         has_backing=False),
                    None, [], "raw", size)
