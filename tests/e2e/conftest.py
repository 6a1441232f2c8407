"""End-to-end harness: a real Keystone + Glance + Placement + Nova.

The cloud is the minicloud (tools/minicloud), started before the tests by
`tools/minicloud/minicloud.sh up` (after `tools/test-services.sh start`):
booting it takes about a minute, so it runs once for the whole session and
beyond.  Its state dir is $CS2OS_MINICLOUD_DIR (default
/var/lib/cs2os-minicloud); up.sh writes minicloud.json there once the cloud
is ready.  A cloud that is not up fails the tests with the command that
starts it: these tests never skip.
"""

import dataclasses
import importlib.util
import json
import os

import pytest

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


@pytest.fixture(scope="session")
def minicloud():
    path = os.path.join(STATE_DIR, "minicloud.json")
    if not os.path.exists(path):
        pytest.fail("the minicloud is not up (no %s); %s" % (path, HINT),
                    pytrace=False)
    with open(path) as f:
        info = json.load(f)
    try:
        conn = smoke.connect(info)
        services = list(conn.compute.services(binary="nova-compute",
                                              host=info["compute_host"]))
    except Exception as exc:  # noqa: BLE001
        pytest.fail("the minicloud in %s does not answer at %s (%s); %s"
                    % (STATE_DIR, info.get("auth_url"), exc, HINT),
                    pytrace=False)
    if not services or services[0].state != "up":
        pytest.fail("nova-compute on %s is not up in the minicloud (%s); "
                    "see %s/nova-compute.log; %s"
                    % (info["compute_host"],
                       [(s.host, s.state) for s in services],
                       info["log_dir"], HINT), pytrace=False)
    yield Minicloud(info=info, conn=conn)
    conn.close()
