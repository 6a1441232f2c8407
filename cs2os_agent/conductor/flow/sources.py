"""Where a file on CloudStack primary storage is read from.

CloudStack KVM hosts mount NFS primary storage pool P at /mnt/<P uuid>; an
overlay's header names its template by that path.  The same file is
reachable three ways, chosen by ``[conductor] overlay_transport``:

- path: the pool mounted at <primary_storage_mount>/<P uuid> on the reader;
- ssh:  the same /mnt path on the CloudStack host that runs the VM;
- nfs:  the pool's export on its NFS server, read in user space.
"""

import posixpath

from cs2os_agent.common import exception

CLOUDSTACK_MOUNT = "/mnt"


def pool_relative(path, pool_id):
    """``/mnt/<pool>/x`` -> ``x``; anything else is refused."""
    prefix = posixpath.join(CLOUDSTACK_MOUNT, pool_id) + "/"
    normal = posixpath.normpath(path)
    if not normal.startswith(prefix):
        raise exception.Invalid(
            reason="%s is not on primary storage pool %s (%s)"
            % (path, pool_id, prefix))
    return normal[len(prefix):]


def rbd_source(pool, image):
    """The ``rbd`` transport's source for image ``image`` (a volume's path)
    of CloudStack RBD pool ``pool``: its path is the Ceph pool's name, its
    ipaddress the monitors."""
    return {"transport": "rbd", "pool": pool["path"], "image": image,
            "monitors": pool["ipaddress"]}


def source_for(conf, vm, cloudstack_path, pool=None):
    """The ``source`` dict a transport takes for a file of ``pool`` (the
    root volume's by default)."""
    pool = pool or vm["root_volume"]["storage"]
    relative = pool_relative(cloudstack_path, pool["id"])
    transport = conf.conductor.overlay_transport
    if transport == "path":
        return {"transport": "path",
                "path": posixpath.join(conf.conductor.primary_storage_mount,
                                       pool["id"], relative)}
    if transport == "ssh":
        host = vm.get("host") or {}
        if not host.get("ipaddress"):
            raise exception.Invalid(
                reason="CloudStack does not say which host runs VM %s; the "
                "ssh transport needs it (is the VM running?)" % vm["id"])
        return {"transport": "ssh", "host": host["ipaddress"],
                "path": posixpath.join(CLOUDSTACK_MOUNT, pool["id"],
                                       relative)}
    return {"transport": "nfs", "server": pool["ipaddress"],
            "export": pool["path"], "path": relative}
