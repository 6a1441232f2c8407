"""The DevStack plugin (devstack/) on three nodes, as an operator runs it.

A controller, a compute-only subnode and an all-in-one node are each
stacked, unstacked and cleaned once (tests/functional/devstack_harness.py
runs the plugin on stubbed DevStack functions); these tests check what
each phase writes and asks DevStack to do; shellcheck checks the shell
itself.  What one setting changes, one stack run each:
tests/functional/test_devstack_plugin_settings.py.
"""

import shutil
import stat
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from oslo_config import cfg

from cs2os_agent import conf as cs2os_conf
from tests.functional.devstack_harness import API_URL
from tests.functional.devstack_harness import CLOUDSTACK_API_KEY
from tests.functional.devstack_harness import CLOUDSTACK_ENDPOINT
from tests.functional.devstack_harness import CLOUDSTACK_ENV
from tests.functional.devstack_harness import CLOUDSTACK_SECRET_KEY
from tests.functional.devstack_harness import COMPUTE
from tests.functional.devstack_harness import CONTROLLER
from tests.functional.devstack_harness import PASSWORDS
from tests.functional.devstack_harness import REPO
from tests.functional.devstack_harness import SECRETS
from tests.functional.devstack_harness import SERVICE_HOST
from tests.functional.devstack_harness import conf_path
from tests.functional.devstack_harness import read_conf
from tests.functional.devstack_harness import run
from tests.functional.devstack_harness import uwsgi_conf_path

SHELL_FILES = [
    "devstack/plugin.sh",
    "devstack/settings",
    "devstack/lib/cs2os",
    "tests/devstack/run-plugin.sh",
    "tests/devstack/stub-functions.sh",
]


class Node:
    """stack, then unstack, then clean on one node, as an operator would."""

    def __init__(self, root, services, **env):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.conf_path = conf_path(root)
        self.stack = run(root, "stack", services, **env)
        self.conf_text = self.conf_path.read_text()
        # What stack wrote, kept past clean.
        self.stacked_conf = root / "cs2os.conf.stacked"
        self.stacked_conf.write_text(self.conf_text)
        self.conf = read_conf(self.conf_path)
        uwsgi_ini = uwsgi_conf_path(root)
        if uwsgi_ini.exists():
            (root / "uwsgi.stacked").write_text(uwsgi_ini.read_text())
        self.conf_mode = stat.S_IMODE(self.conf_path.stat().st_mode)
        self.unstack = run(root, "unstack", services, **env)
        self.conf_after_unstack = self.conf_path.exists()
        self.clean = run(root, "clean", services, **env)
        self.runs = [self.stack, self.unstack, self.clean]

    def path(self, relative):
        return str(self.root / relative)


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    return Node(tmp_path_factory.mktemp("controller"), CONTROLLER,
                **CLOUDSTACK_ENV)


@pytest.fixture(scope="module")
def compute(tmp_path_factory):
    return Node(tmp_path_factory.mktemp("compute"), COMPUTE,
                **CLOUDSTACK_ENV)


@pytest.fixture(scope="module")
def allinone(tmp_path_factory):
    # DevStack's default services: the settings add cs2os's three.
    return Node(tmp_path_factory.mktemp("allinone"),
                "key,mysql,rabbit,g-api,n-api,n-cond,n-sch,n-cpu,placement-api",
                **CLOUDSTACK_ENV)


def command_line(node, program):
    """The command line DevStack would put in devstack@<svc>.service."""
    return "%s --config-file %s" % (
        node.path("opt/stack/data/venv/bin/" + program), node.conf_path)


def api_command_line(node):
    """cs2os-api's: uwsgi (the venv's, by `which`) with the plugin's ini."""
    return "%s --procname-prefix cs2os-api --ini %s" % (
        node.path("opt/stack/data/venv/bin/uwsgi"), uwsgi_conf_path(node.root))


# The controller ---------------------------------------------------------


def test_controller_config(controller):
    conf = controller.conf
    assert conf["DEFAULT"]["transport_url"] == (
        "rabbit://stackrabbit:%s@%s:5672/"
        % (PASSWORDS["RABBIT_PASSWORD"], SERVICE_HOST))
    assert conf["DEFAULT"]["debug"] == "True"
    assert conf["database"]["connection"] == (
        "mysql+pymysql://root:%s@%s/cs2os?charset=utf8"
        % (PASSWORDS["DATABASE_PASSWORD"], SERVICE_HOST))
    # Under uwsgi: no address of its own to bind.
    assert dict(conf["api"]) == {"auth_strategy": "keystone"}
    authtoken = conf["keystone_authtoken"]
    assert authtoken["auth_type"] == "password"
    assert authtoken["auth_url"] == "http://%s/identity" % SERVICE_HOST
    assert authtoken["www_authenticate_uri"] == authtoken["auth_url"]
    assert authtoken["username"] == "cs2os"
    assert authtoken["password"] == PASSWORDS["SERVICE_PASSWORD"]
    assert authtoken["project_name"] == "service"
    assert dict(conf["cloudstack"]) == {
        "endpoint": CLOUDSTACK_ENDPOINT,
        "api_key": CLOUDSTACK_API_KEY,
        "secret_key": CLOUDSTACK_SECRET_KEY,
        "verify": "True",
        "network_map": "guest-net:private,dmz:public",
        "project_map": "ROOT/webshop:webshop,*:migrated",
        "kvm_libvirt_uri": (
            "qemu+ssh://root@{host}/system?keyfile=%(dir)s/id_ed25519&"
            "known_hosts=%(dir)s/known_hosts"
            % {"dir": controller.conf_path.parent / "ssh"}),
        "kvm_ssh_port": "22"}
    openstack = conf["openstack"]
    assert openstack["auth_type"] == "password"
    assert openstack["username"] == "cs2os"
    assert openstack["password"] == PASSWORDS["SERVICE_PASSWORD"]
    assert openstack["region_name"] == "RegionOne"
    # DevStack registers Nova and Glance with public endpoints only.
    assert openstack["interface"] == "public"
    assert dict(conf["conductor"]) == {
        "overlay_transport": "path",
        "primary_storage_mount": "/mnt",
        "image_spool_dir": controller.path("opt/stack/data/cs2os/images")}
    # No agent here: nothing of the agent's in the file.
    for section in ("agent", "libvirt", "transfer"):
        assert not conf.has_section(section)


def test_config_readable_by_its_owner_only(controller):
    assert controller.conf_mode == 0o600


def test_config_loads_with_the_real_options(allinone):
    """Every option written exists, and oslo.config accepts every value."""
    # The option lists oslo-config-generator would use for a full sample.
    listers = {
        ep.name: ep for ep in metadata.entry_points(group="oslo.config.opts")
    }
    known = {}
    for namespace in ("cs2os", "oslo.db", "oslo.messaging", "oslo.log",
                      "keystonemiddleware.auth_token", "oslo.policy"):
        for group, opts in listers[namespace].load()():
            name = getattr(group, "name", group) or "DEFAULT"
            known.setdefault(name, set()).update(o.dest for o in opts)
    # keystone_authtoken's auth plugin options come from keystoneauth.
    known["keystone_authtoken"] |= known["openstack"]

    conf = allinone.conf
    unknown = {
        (section, option)
        for section in conf.sections()
        for option in conf[section]
        if option not in known.get(section, ())
    }
    assert not unknown

    # Typed values as the services will see them.
    opts = cfg.ConfigOpts()
    for module in cs2os_conf.ALL_MODULES:
        module.register_opts(opts)
    opts([], default_config_files=[str(allinone.stacked_conf)])
    assert opts.api.bind_host == "0.0.0.0"
    assert opts.api.bind_port == 9877
    assert opts.api.auth_strategy == "keystone"
    assert opts.cloudstack.endpoint == CLOUDSTACK_ENDPOINT
    assert opts.cloudstack.secret_key == CLOUDSTACK_SECRET_KEY
    assert opts.cloudstack.verify is True
    assert opts.conductor.overlay_transport == "path"
    assert opts.agent.instances_path == allinone.path(
        "opt/stack/data/nova/instances")
    assert opts.agent.allowed_source_roots == ["/mnt"]
    assert opts.libvirt.connection_uri == "qemu:///system"
    assert opts.transfer.ssh_private_key_file == allinone.path(
        "etc/cs2os/ssh/id_ed25519")
    assert opts.openstack.interface == "public"
    assert opts.database.connection.startswith("mysql+pymysql://")


def test_controller_starts_api_and_conductor(controller):
    assert controller.stack.named("run_process") == [
        ["cs2os-api", api_command_line(controller)],
        ["cs2os-cond", command_line(controller, "cs2os-conductor")],
    ]
    # DevStack's uwsgi, found as lib/placement finds it.
    assert controller.stack.named("which") == [["uwsgi"]]
    # Apache's /cs2os, through the proxy to uwsgi.
    assert controller.stack.named("wait_for_service") == [["60", API_URL]]


def test_controller_runs_the_api_under_uwsgi_at_cs2os(controller):
    ini = str(uwsgi_conf_path(controller.root))
    # lib/apache's module form: conf, module, URL path, no http, name.
    assert controller.stack.named("write_uwsgi_config") == [
        [ini, "cs2os_agent.wsgi.api:application", "/cs2os", "",
         "cs2os-api"]]
    stack = controller.stack
    assert (stack.index("write_uwsgi_config", ini,
                        "cs2os_agent.wsgi.api:application", "/cs2os", "",
                        "cs2os-api")
            < stack.index("run_process", "cs2os-api",
                          api_command_line(controller)))
    # The module reads its config from $CS2OS_CONFIG_FILES.
    uwsgi = read_conf(Path(controller.path("uwsgi.stacked")))["uwsgi"]
    assert uwsgi["module"] == "cs2os_agent.wsgi.api:application"
    assert uwsgi["env"] == "CS2OS_CONFIG_FILES=%s" % controller.conf_path
    # clean removes the ini and Apache's site; unstack keeps both.
    assert controller.clean.named("remove_uwsgi_config") == [
        [ini, "cs2os-api"]]
    assert controller.unstack.named("remove_uwsgi_config") == []
    assert controller.clean.named("sudo")[0] == [
        "rm", "-f",
        controller.path("etc/apache2/sites-available/cs2os-api.conf")]


def test_controller_registers_service_and_endpoint(controller):
    stack = controller.stack
    assert stack.named("create_service_user") == [["cs2os", "admin"]]
    services = stack.named("get_or_create_service")
    assert [s[:2] for s in services] == [["cs2os", "cs2os"]]
    # public, admin, internal: the unversioned root (the API serves /v1).
    assert stack.named("get_or_create_endpoint") == [
        ["service-id-of-cs2os", "RegionOne", API_URL, API_URL, API_URL]]


def test_controller_syncs_the_database_before_starting(controller):
    stack = controller.stack
    conf = str(controller.conf_path)
    manage = controller.path("opt/stack/data/venv/bin/cs2os-manage")
    assert stack.named("recreate_database") == [["cs2os"]]
    assert stack.named("exec") == [
        [manage, "--config-file", conf, "db", "sync"]]
    connection = next(c for c in stack.calls
                      if c[:4] == ["iniset", conf, "database", "connection"])
    db_sync = stack.index("exec", manage, "--config-file", conf, "db", "sync")
    assert (stack.calls.index(connection)
            < stack.index("recreate_database", "cs2os")
            < db_sync
            < stack.index("run_process", "cs2os-api",
                          api_command_line(controller)))


def test_controller_installs_from_its_checkout(controller):
    # With every service's requirements: plain, only the CLI's.
    assert controller.stack.named("setup_develop") == [
        [controller.path("opt/stack/cs2os"), "all"]]


def test_controller_unstack_stops_its_services(controller):
    assert controller.unstack.named("stop_process") == [
        ["cs2os-api"], ["cs2os-cond"]]
    assert controller.unstack.named("run_process") == []
    # unstack stops; it keeps the configuration.
    assert controller.conf_after_unstack


def test_clean_removes_config_and_state(controller, compute):
    for node in (controller, compute):
        assert not (node.root / "etc" / "cs2os").exists()
        assert not (node.root / "opt/stack/data/cs2os").exists()


# A compute-only node ----------------------------------------------------


def test_compute_starts_only_the_agent(compute):
    # As nova-compute: as the stack user, in the libvirt group.
    assert compute.stack.named("run_process") == [
        ["cs2os-agent", command_line(compute, "cs2os-agent"), "libvirt"]]
    assert compute.unstack.named("stop_process") == [["cs2os-agent"]]


def test_compute_registers_and_migrates_nothing(compute):
    stack = compute.stack
    for name in ("recreate_database", "exec", "create_service_user",
                 "get_or_create_service", "get_or_create_endpoint",
                 "wait_for_service", "write_uwsgi_config", "which",
                 "configure_keystone_authtoken_middleware"):
        assert stack.named(name) == [], name


def test_compute_config_holds_the_agent_part_only(compute):
    conf = compute.conf
    assert conf["DEFAULT"]["transport_url"].startswith("rabbit://")
    assert dict(conf["agent"]) == {
        "instances_path": compute.path("opt/stack/data/nova/instances"),
        "allowed_source_roots": "/mnt"}
    assert dict(conf["libvirt"]) == {"connection_uri": "qemu:///system"}
    assert dict(conf["transfer"]) == {
        "ssh_private_key_file": compute.path("etc/cs2os/ssh/id_ed25519"),
        "ssh_known_hosts_file": compute.path("etc/cs2os/ssh/known_hosts"),
        "ssh_user": "root"}
    for section in ("database", "api", "keystone_authtoken", "openstack",
                    "cloudstack", "conductor"):
        assert not conf.has_section(section), section
    # A compute node gets no credential it does not use.
    for secret in (CLOUDSTACK_SECRET_KEY, CLOUDSTACK_API_KEY,
                   PASSWORDS["SERVICE_PASSWORD"],
                   PASSWORDS["DATABASE_PASSWORD"]):
        assert secret not in compute.conf_text


# Both --------------------------------------------------------------------


def test_secrets_never_reach_the_trace(controller, compute):
    for node in (controller, compute):
        for result in node.runs:
            for secret in SECRETS:
                assert secret not in result.trace, (
                    node.root.name, result.command)
                assert secret not in result.output, (
                    node.root.name, result.command)
    # The trace is real: it shows the plugin's own commands.
    assert "+ run_process cs2os-api " in controller.stack.trace
    assert "+ _cs2os_untraced _cs2os_set_cloudstack" in controller.stack.trace
    # ... and the secrets did reach the file.
    assert CLOUDSTACK_SECRET_KEY in controller.conf_text


def test_all_in_one_runs_everything(allinone):
    names = [call[0] for call in allinone.stack.named("run_process")]
    assert names == ["cs2os-api", "cs2os-cond", "cs2os-agent"]
    assert allinone.conf.has_section("cloudstack")
    assert allinone.conf.has_section("agent")


def test_shellcheck():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, (
        "shellcheck is not installed (Debian package shellcheck; "
        "tools/install-deps.sh installs it)")
    proc = subprocess.run(
        [shellcheck, "-s", "bash", "-x", *SHELL_FILES],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
