"""The minicloud (tools/minicloud) as the test bed sees it.

A real Keystone, Glance, Placement and Nova on this machine, started by
``tools/minicloud/minicloud.sh up`` (after ``tools/test-services.sh
start``); its state dir is $CS2OS_MINICLOUD_DIR, where up.sh writes
minicloud.json once the cloud is ready.  The end-to-end tests, the fault
suite and tools/bench_mirror.py migrate into it.
"""

import dataclasses
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
STATE_DIR = os.environ.get("CS2OS_MINICLOUD_DIR", "/var/lib/cs2os-minicloud")
HINT = ("start it with: tools/minicloud/minicloud.sh up "
        "(services first: tools/test-services.sh start)")


def _load_minicloud_module(name):
    # tools/minicloud is not a package; its smoke helpers are loaded by path
    # so that the smoke command and these tests check the same things.
    path = os.path.join(REPO, "tools", "minicloud", name + ".py")
    spec = importlib.util.spec_from_file_location("minicloud_" + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


smoke = _load_minicloud_module("smoke")


@dataclasses.dataclass
class Minicloud:
    info: dict  # minicloud.json: auth_url, compute_host, instances_path...
    conn: object  # openstacksdk Connection as the cloud's admin

    @property
    def compute_host(self):
        return self.info["compute_host"]

    @property
    def instances_path(self):
        return self.info["instances_path"]

    def connect(self, cloud=None):
        """Another openstacksdk Connection (cloud: a clouds.yaml entry)."""
        return smoke.connect(self.info, cloud)


def admin_auth(minicloud):
    """The cloud's admin as cs2os's [openstack] options (keystoneauth)."""
    with open(minicloud.info["clouds_yaml"]) as f:
        import yaml

        clouds = yaml.safe_load(f)["clouds"]
    auth = clouds[minicloud.info["admin_cloud"]]["auth"]
    return {
        "auth_type": "password",
        "auth_url": auth["auth_url"],
        "username": auth["username"],
        "password": auth["password"],
        "project_name": auth["project_name"],
        "user_domain_name": auth.get("user_domain_name", "Default"),
        "project_domain_name": auth.get("project_domain_name", "Default"),
        "region_name": minicloud.info.get("region_name", "RegionOne"),
        "interface": "public",
    }
