"""The DevStack plugin (devstack/): what one setting changes.

Each test runs one phase of the plugin (tests/functional/devstack_harness.py)
with one setting or environment of its own, in its own temporary directory:
the agent's host name, default services, paths from the environment, the
ssh transport's key, no CloudStack settings, noauth, and that the secrets
check would catch a traced secret.
"""

import re
import shutil
import stat
from pathlib import Path

import pytest

from tests.functional.devstack_harness import CLOUDSTACK_ENV
from tests.functional.devstack_harness import CLOUDSTACK_SECRET_KEY
from tests.functional.devstack_harness import COMPUTE
from tests.functional.devstack_harness import CONTROLLER
from tests.functional.devstack_harness import PASSWORDS
from tests.functional.devstack_harness import REPO
from tests.functional.devstack_harness import STANDALONE_API_URL
from tests.functional.devstack_harness import conf_path
from tests.functional.devstack_harness import read_conf
from tests.functional.devstack_harness import run
from tests.functional.devstack_harness import uwsgi_conf_path


@pytest.mark.parametrize("nova_host, cs2os_host, expected", [
    ("compute-7", None, "compute-7"),
    ("compute-7", "agent-override", "agent-override"),
    (None, None, None),
])
def test_agent_host_follows_nova_compute(tmp_path, nova_host, cs2os_host,
                                         expected):
    nova_conf = tmp_path / "etc" / "nova" / "nova-cpu.conf"
    nova_conf.parent.mkdir(parents=True)
    nova_conf.write_text(
        "[DEFAULT]\n%s" % ("host = %s\n" % nova_host if nova_host else ""))
    env = dict(CLOUDSTACK_ENV)
    if cs2os_host:
        env["CS2OS_HOST"] = cs2os_host
    run(tmp_path, "stack", COMPUTE, **env)
    conf = read_conf(conf_path(tmp_path))
    # None: unset in both files, so both use the system host name.
    assert conf["DEFAULT"].get("host") == expected


def test_the_trace_would_show_an_unguarded_secret(tmp_path):
    """The check above can fail: a plugin that writes the keys traced leaks
    them into the harness's trace as into stack.sh's log."""
    broken = tmp_path / "devstack"
    shutil.copytree(REPO / "devstack", broken)
    lib = broken / "lib" / "cs2os"
    lib.write_text(re.sub(r"^(\s+)_cs2os_untraced ", r"\1", lib.read_text(),
                          flags=re.MULTILINE))
    root = tmp_path / "root"
    root.mkdir()
    result = run(root, "stack", CONTROLLER, STUB_PLUGIN_DIR=str(broken),
                 **CLOUDSTACK_ENV)
    assert CLOUDSTACK_SECRET_KEY in result.trace
    assert PASSWORDS["SERVICE_PASSWORD"] in result.trace


def test_paths_from_the_environment_are_overridden(tmp_path):
    outside = Path("/etc/cs2os-devstack-test-must-not-exist")
    run(tmp_path, "stack", COMPUTE, CS2OS_CONF_DIR=str(outside),
        DEST="/opt/stack", DATA_DIR="/opt/stack/data", **CLOUDSTACK_ENV)
    assert conf_path(tmp_path).is_file()
    assert not outside.exists()


@pytest.mark.parametrize("services, disabled, expected", [
    # all-in-one: cs2os follows Nova's API and compute services
    ("key,n-api,n-cpu", "", {"cs2os-api", "cs2os-cond", "cs2os-agent"}),
    ("n-cpu,q-agt", "", {"cs2os-agent"}),
    ("key,n-api", "", {"cs2os-api", "cs2os-cond"}),
    # local.conf's disable_service wins
    ("key,n-api,n-cpu", "cs2os-cond", {"cs2os-api", "cs2os-agent"}),
    ("key,g-api", "", set()),
])
def test_default_services(tmp_path, services, disabled, expected):
    result = run(tmp_path, "unstack", services, DISABLED_SERVICES=disabled)
    enabled = {s for s in result.services if s.startswith("cs2os-")}
    assert enabled == expected
    assert {c[0] for c in result.named("stop_process")} == expected


def test_ssh_transport_gets_a_private_key(tmp_path):
    assert shutil.which("ssh-keygen"), "ssh-keygen (openssh-client) missing"
    run(tmp_path, "stack", COMPUTE, CS2OS_OVERLAY_TRANSPORT="ssh",
        **CLOUDSTACK_ENV)
    ssh_dir = tmp_path / "etc" / "cs2os" / "ssh"
    key = ssh_dir / "id_ed25519"
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (ssh_dir / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    # Empty: the operator adds the CloudStack hosts' keys after checking them.
    assert (ssh_dir / "known_hosts").read_text() == ""


def test_without_cloudstack_settings_it_warns(tmp_path):
    result = run(tmp_path, "stack", CONTROLLER)
    conf = read_conf(conf_path(tmp_path))
    assert not conf.has_section("cloudstack")
    assert [w[0].split(":")[0] for w in result.named("warn")] == [
        "CS2OS_CLOUDSTACK_ENDPOINT is not set"]
    assert len(result.named("run_process")) == 2


def test_noauth_writes_no_keystone_authtoken(tmp_path):
    run(tmp_path, "stack", CONTROLLER, CS2OS_AUTH_STRATEGY="noauth",
        **CLOUDSTACK_ENV)
    conf = read_conf(conf_path(tmp_path))
    assert conf["api"]["auth_strategy"] == "noauth"
    assert not conf.has_section("keystone_authtoken")


def test_without_uwsgi_the_standalone_server_runs(tmp_path):
    result = run(tmp_path, "stack", CONTROLLER, CS2OS_USE_UWSGI="False",
                 **CLOUDSTACK_ENV)
    conf = read_conf(conf_path(tmp_path))
    assert dict(conf["api"]) == {
        "bind_host": "0.0.0.0", "bind_port": "9877",
        "auth_strategy": "keystone"}
    api = result.named("run_process")[0]
    assert api == ["cs2os-api", "%s --config-file %s" % (
        tmp_path / "opt/stack/data/venv/bin/cs2os-api", conf_path(tmp_path))]
    assert result.named("get_or_create_endpoint")[0][2:] == [
        STANDALONE_API_URL] * 3
    assert result.named("wait_for_service") == [["60", STANDALONE_API_URL]]
    for name in ("write_uwsgi_config", "which"):
        assert result.named(name) == [], name
    assert not uwsgi_conf_path(tmp_path).exists()
    cleaned = run(tmp_path, "clean", CONTROLLER, CS2OS_USE_UWSGI="False")
    assert cleaned.named("remove_uwsgi_config") == []
