"""QEMU's events at a source's end, scripted from a real host's, and the real
SourceEndWatch that judges them (libvirt's registration left out).

The warm World (warm_world.py) feeds them to the watch when CloudStack
stops the VM.
"""

from cs2os_agent.sourcehost import sourceend


def qmp(name, **data):
    return (name, data)


JOB = "copy-vda-libvirt-1-format"
POWERDOWN = qmp("POWERDOWN")
GUEST_SHUTDOWN = qmp("SHUTDOWN", guest=True, reason="guest-shutdown")
HOST_SHUTDOWN = qmp("SHUTDOWN", guest=False, reason="host-signal")
CANCELLED = qmp("BLOCK_JOB_CANCELLED", device=JOB, len=100, offset=100,
                speed=0, type="mirror")
# QEMU's events on a real host when CloudStack stopped a guest that shut
# down (tests/unit/sourcehost/test_sourceend.py has them all).
CLEAN_END = [POWERDOWN, GUEST_SHUTDOWN, qmp("STOP"),
             qmp("JOB_STATUS_CHANGE", id=JOB, status="standby"),
             qmp("JOB_STATUS_CHANGE", id=JOB, status="ready"),
             HOST_SHUTDOWN,
             qmp("JOB_STATUS_CHANGE", id=JOB, status="aborting"),
             CANCELLED,
             qmp("JOB_STATUS_CHANGE", id=JOB, status="concluded"),
             qmp("JOB_STATUS_CHANGE", id=JOB, status="null")]
# The target's daemon died before a guest write; then the domain ended.
LOST_WRITE_END = [
    qmp("BLOCK_JOB_ERROR", device=JOB, operation="write", action="report"),
    HOST_SHUTDOWN, CANCELLED]


class ScriptedSourceEnd(sourceend.SourceEndWatch):
    """The real watch and verdict; libvirt's registration left out.  The
    world feeds it QEMU's events when CloudStack stops the VM."""

    world = None

    def __enter__(self):
        assert self.conn is self.world.conn and self.disk == "vda"
        self.world.watches.append(self)
        self.open = True
        return self

    def __exit__(self, *exc_info):
        self.open = False


def shutdown_time(watch):
    return next(at for at, name, _ in watch.events if name == "SHUTDOWN")
