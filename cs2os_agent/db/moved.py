"""The bytes a migration moved across clouds, from its ``result``.

``migrations.bytes_moved`` is this figure of the record's ``result``,
computed by db/api.py at every write of ``result`` (never added to): a
step that runs again after a crash or a takeover writes its figure again
in place of the first, so nothing counts twice.  What the flow records
(conductor/flow/):

template_bytes_moved     image.py: the template spooled from the source
                         and uploaded to Glance (0 when reused).
sync.bytes_copied        disk.py: the agent's copy of the root overlay
                         and its layers (cold); NOT counted when
                         ``sync.source.transport`` is "mirror": warm's
                         sync is the agent staging what the mirror
                         already wrote, on the target's side.
data_disks[].bytes_copied  datadisks.py: each data disk the agent wrote
                         into its Cinder volume (cold; warm's data disks
                         ride the mirror and have no such figure).
mirror.bytes             mirroring.py: the warm mirror job's length at
                         READY, every disk it mirrors summed (writes the
                         guest makes after READY until the cutover are
                         not in it).
"""


def _bytes(value):
    # A figure the agent did not send (an older agent, a failed call) is
    # None: nothing is known to have moved.
    return int(value) if isinstance(value, (int, float)) else 0


def bytes_moved(result):
    """The total of the copies ``result`` records, an int >= 0."""
    result = result or {}
    total = _bytes(result.get("template_bytes_moved"))
    sync = result.get("sync")
    if isinstance(sync, dict):
        source = sync.get("source")
        if not (isinstance(source, dict)
                and source.get("transport") == "mirror"):
            total += _bytes(sync.get("bytes_copied"))
    for disk in result.get("data_disks") or []:
        if isinstance(disk, dict):
            total += _bytes(disk.get("bytes_copied"))
    mirror = result.get("mirror")
    if isinstance(mirror, dict):
        total += _bytes(mirror.get("bytes"))
    return max(total, 0)
