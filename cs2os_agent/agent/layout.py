"""Names of the files cs2os keeps in a Nova instance directory.

Everything the agent writes lives next to Nova's ``disk`` with a
``disk.cs2os-`` prefix, so an operator can tell at a glance what is ours and
``cleanup`` can remove exactly that.
"""

import glob
import os

# The most layers a chain may have between the template and the volume
# (overlay.stage refuses more); also how many layer names cleanup removes.
MAX_LAYERS = 16


class InstanceFiles:
    def __init__(self, instance_dir):
        self.instance_dir = instance_dir

    def _name(self, name):
        return os.path.join(self.instance_dir, name)

    @property
    def disk(self):
        """Nova's root disk; the domain XML points at this path."""
        return self._name("disk")

    @property
    def staged(self):
        """A verified overlay, rebased onto the base, ready to swap in."""
        return self._name("disk.cs2os-staged")

    @property
    def partial(self):
        """A copy in progress; never mistaken for a finished one."""
        return self._name("disk.cs2os-staged.part")

    @property
    def converted(self):
        """A raw root volume's copy being converted into qcow2
        (agent/rawroot.py); renamed to ``staged`` once verified."""
        return self._name("disk.cs2os-staged.qcow2.part")

    @property
    def partial_meta(self):
        """JSON: which source the partial copy is of, how much is durable."""
        return self._name("disk.cs2os-staged.part.json")

    @property
    def staged_meta(self):
        """JSON: which migration and which source the staged file holds."""
        return self._name("disk.cs2os-staged.json")

    @property
    def orig(self):
        """Nova's original root disk, kept for rollback."""
        return self._name("disk.cs2os-orig")

    @property
    def mirror(self):
        """T: the fresh overlay on the base that a live mirror fills."""
        return self._name("disk.cs2os-mirror")

    def layer(self, n):
        """The copy of a chain's layer ``n`` (0: the one the overlay's
        header names), merged into the overlay and removed by ``stage``."""
        return self._name("disk.cs2os-layer-%d" % n)

    def layer_meta(self, n):
        """JSON: which source layer ``n``'s copy is of (as partial_meta)."""
        return self.layer(n) + ".json"

    def layers(self):
        """Every layer copy and sidecar name a stage may leave."""
        return [name for n in range(MAX_LAYERS)
                for name in (self.layer(n), self.layer_meta(n))]

    def volume_files(self):
        """What agent/volumes.py leaves while writing data disks: copies of
        their chains and each volume's result sidecar."""
        return sorted(glob.glob(self._name("disk.cs2os-volume-*")))

    def ours(self):
        return [
            *self.volume_files(),
            self.mirror,
            self.staged,
            self.partial,
            self.converted,
            self.partial_meta,
            self.staged_meta,
            self.orig,
            *self.layers(),
        ]
