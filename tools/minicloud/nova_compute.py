"""nova-compute for the minicloud, whose libvirtd is shared.

Stock nova-compute (nova.cmd.compute.main) with one check narrowed.  On its
first start against a database, Nova refuses to run if the hypervisor has
any domain at all ("My hypervisor has existing instances, but I appear to be
a new service in this database"): ComputeManager._sanity_check_new_host
counts every libvirt domain.  Here libvirtd also runs domains that are not
Nova's and never will be (the functional tests' cs2os-test-*, the CloudStack
side's i-N-M-VM), started and stopped at any moment by other processes, so
the stock check makes a fresh cloud's start a race.  The narrowed check
still refuses to start when a domain named by this cloud's
instance_name_template exists (a leftover of an earlier minicloud), which is
the case the check is there for.  Every other domain is ignored by Nova
anyway: it matches libvirt domains to instances by UUID from its database.
"""

# nova.cmd.compute must come first: it selects Nova's concurrency backend
# (monkey_patch) before anything else of Nova is imported.
from nova.cmd import compute  # isort: skip

import re  # noqa: E402
import sys  # noqa: E402

from nova import exception  # noqa: E402
from nova.compute import manager  # noqa: E402
from oslo_log import log as logging  # noqa: E402

LOG = logging.getLogger("nova.compute.manager")


def template_regex(template):
    """A regex for the domain names a printf-style template can produce."""
    out, pos = [], 0
    for m in re.finditer(r"%(\([a-z_]+\))?[-0-9]*([sdx])", template):
        out.append(re.escape(template[pos:m.start()]))
        out.append({"s": ".+", "d": "[0-9]+", "x": "[0-9a-f]+"}[m.group(2)])
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^%s$" % "".join(out))


def _sanity_check_new_host(self):
    names = template_regex(compute.CONF.instance_name_template)
    domains = self.driver.list_instances()
    ours = [n for n in domains if names.match(n)]
    others = len(domains) - len(ours)
    if others:
        LOG.info("minicloud: ignoring %d libvirt domain(s) not named by "
                 "instance_name_template %r (not Nova's)", others,
                 compute.CONF.instance_name_template)
    if ours:
        raise exception.InvalidConfiguration(
            "My hypervisor has existing instances (%s), but I appear to be "
            "a new service in this database. Possible database "
            "configuration error, refusing to start!" % ", ".join(ours))


def main():
    if not hasattr(manager.ComputeManager, "_sanity_check_new_host"):
        sys.exit("minicloud: this Nova has no "
                 "ComputeManager._sanity_check_new_host; nova_compute.py "
                 "needs updating for it")
    manager.ComputeManager._sanity_check_new_host = _sanity_check_new_host
    sys.argv[0] = "nova-compute"
    return compute.main()


if __name__ == "__main__":
    sys.exit(main())
