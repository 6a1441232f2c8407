"""The DevStack plugin (devstack/), run on stubbed DevStack functions.

DevStack itself cannot run here (it clones and installs all of OpenStack),
so tests/devstack/run-plugin.sh sources devstack/settings and
devstack/plugin.sh the way stack.sh, unstack.sh and clean.sh do, with
xtrace on, against stand-ins for DevStack's functions
(tests/devstack/stub-functions.sh).  iniset writes the real file; the rest
record their calls.  Every path lies in the test's temporary directory.
These tests check what the plugin writes and asks DevStack to do; shellcheck
checks the shell itself.
"""

import configparser
import os
import re
import shutil
import stat
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from oslo_config import cfg

from cs2os_agent import conf as cs2os_conf

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests" / "devstack" / "run-plugin.sh"
SHELL_FILES = [
    "devstack/plugin.sh",
    "devstack/settings",
    "devstack/lib/cs2os",
    "tests/devstack/run-plugin.sh",
    "tests/devstack/stub-functions.sh",
]
SEP = "\x1f"

SERVICE_HOST = "192.0.2.10"  # the harness's default
API_URL = "http://%s:9877" % SERVICE_HOST
CLOUDSTACK_ENDPOINT = "https://cloudstack.test:8443/client/api"
CLOUDSTACK_API_KEY = "cs-api-key-0f9e31"
# '&' and '\' are what DevStack's iniset must escape for sed.
CLOUDSTACK_SECRET_KEY = r"cs-secret-7Q&x\y"
PASSWORDS = {
    "SERVICE_PASSWORD": "svc-pass-5a1c",
    "DATABASE_PASSWORD": "db-pass-62d0",
    "RABBIT_PASSWORD": "mq-pass-73e9",
}
SECRETS = [CLOUDSTACK_API_KEY, CLOUDSTACK_SECRET_KEY, *PASSWORDS.values()]
CLOUDSTACK_ENV = {
    "CS2OS_CLOUDSTACK_ENDPOINT": CLOUDSTACK_ENDPOINT,
    "CS2OS_CLOUDSTACK_API_KEY": CLOUDSTACK_API_KEY,
    "CS2OS_CLOUDSTACK_SECRET_KEY": CLOUDSTACK_SECRET_KEY,
    "CS2OS_CLOUDSTACK_NETWORK_MAP": "guest-net:private,dmz:public",
}

# A controller without nova-compute, and a compute-only subnode.
CONTROLLER = "key,mysql,rabbit,g-api,n-api,n-cond,n-sch,cs2os-api,cs2os-cond"
COMPUTE = "n-cpu,q-agt,cs2os-agent"


class Run:
    """One harness run (stack, unstack or clean) and what it left."""

    def __init__(self, root, command, proc):
        self.root = root
        self.command = command
        self.output = proc.stdout + proc.stderr
        log = root / "log"
        self.calls = [
            line.split(SEP)
            for line in (log / ("%s.calls" % command)).read_text().splitlines()
        ]
        self.trace = (log / ("%s.trace" % command)).read_text()
        self.services = (
            (log / ("%s.services" % command)).read_text().strip().split(","))

    def named(self, name):
        """The argument lists of every call to ``name``, in order."""
        return [call[1:] for call in self.calls if call[0] == name]

    def index(self, *call):
        return self.calls.index(list(call))


def run(root, command, services, **env):
    bash = shutil.which("bash")
    assert bash, "bash is needed to run the DevStack plugin"
    # Only what the test chooses: nothing from the caller's environment
    # reaches the plugin.
    full_env = {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "HOME": str(root),
        "ENABLED_SERVICES": services,
        **PASSWORDS,
        **env,
    }
    proc = subprocess.run(
        [bash, str(HARNESS), str(root), command],
        env=full_env, capture_output=True, text=True, timeout=120,
        check=False)
    assert proc.returncode == 0, (
        "run-plugin.sh %s failed (%d):\n%s%s"
        % (command, proc.returncode, proc.stdout, proc.stderr))
    return Run(root, command, proc)


def conf_path(root):
    return root / "etc" / "cs2os" / "cs2os.conf"


def read_conf(path):
    # [DEFAULT] as a section like the others, values as written.
    parser = configparser.RawConfigParser(default_section="no such section")
    parser.read_string(path.read_text(), source=str(path))
    return parser


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
    assert dict(conf["api"]) == {
        "bind_host": "0.0.0.0", "bind_port": "9877",
        "auth_strategy": "keystone"}
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
        "kvm_libvirt_uri": (
            "qemu+libssh://root@{host}/system?keyfile=%(dir)s/id_ed25519&"
            "known_hosts=%(dir)s/known_hosts&known_hosts_verify=normal&"
            "sshauth=privkey" % {"dir": controller.conf_path.parent / "ssh"}),
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
    for namespace in ("cs2os", "oslo.messaging", "oslo.log",
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
        ["cs2os-api", command_line(controller, "cs2os-api")],
        ["cs2os-cond", command_line(controller, "cs2os-conductor")],
    ]
    assert controller.stack.named("wait_for_service") == [["60", API_URL]]


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
                          command_line(controller, "cs2os-api")))


def test_controller_installs_from_its_checkout(controller):
    assert controller.stack.named("setup_develop") == [
        [controller.path("opt/stack/cs2os")]]


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
                 "wait_for_service",
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


def test_all_in_one_runs_everything(allinone):
    names = [call[0] for call in allinone.stack.named("run_process")]
    assert names == ["cs2os-api", "cs2os-cond", "cs2os-agent"]
    assert allinone.conf.has_section("cloudstack")
    assert allinone.conf.has_section("agent")


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


def test_shellcheck():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, (
        "shellcheck is not installed (Debian package shellcheck; "
        "tools/install-deps.sh installs it)")
    proc = subprocess.run(
        [shellcheck, "-s", "bash", "-x", *SHELL_FILES],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
