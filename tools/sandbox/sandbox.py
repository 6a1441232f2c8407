#!/usr/bin/env python3
"""The cs2os sandbox: both clouds and cs2os on this machine, one migration.

``up``: a CloudStack KVM host with a running VM and the CloudStack API
stand-in (cloudstack_host.py), cs2os-api (Keystone auth, in the catalog as
service type ``cs2os``), cs2os-conductor and cs2os-agent (on the
minicloud's compute node), then ``openstack cs2os import <vm> --wait`` as
the minicloud's admin, and a report of what happened.
``down``: stops what ``up`` started (by PID), removes the catalog entry and
the message-bus vhost, and the state dir.
``status``: which sandbox processes run.

tools/sandbox.sh wraps this with the installation and the shared services
(libvirtd, RabbitMQ, the minicloud); run that.
"""

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

import openstack
import report
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
STATE = os.environ.get("CS2OS_SANDBOX_DIR", "/var/lib/cs2os-sandbox")
MINICLOUD = os.environ.get("CS2OS_MINICLOUD_DIR", "/var/lib/cs2os-minicloud")
API_PORT = int(os.environ.get("CS2OS_SANDBOX_API_PORT", "9877"))
VHOST = "cs2os-sandbox"
BROKER = "guest:guest@127.0.0.1:5672"
SERVICES = ("cloudstack", "cs2os-api", "cs2os-conductor", "cs2os-agent")
NETWORK = "cs2os-sandbox-net"
SUBNET = "10.0.0.0/24"
BIN = os.path.dirname(sys.executable)


def say(text):
    print("sandbox: %s" % text, flush=True)


def path(*names):
    return os.path.join(STATE, *names)


def load_json(name):
    with open(name) as f:
        return json.load(f)


def write_private(name, text):
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# -- processes, by PID ---------------------------------------------------


def _start_time(pid):
    # Field 22 of /proc/<pid>/stat: tells a recycled PID from ours.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def start(name, argv):
    log = open(path("log", name + ".log"), "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO),
                            start_new_session=True)
    pids = _pids()
    pids[name] = {"pid": proc.pid, "start": _start_time(proc.pid)}
    write_private(path("pids.json"), json.dumps(pids))
    return proc


def _pids():
    try:
        return load_json(path("pids.json"))
    except FileNotFoundError:
        return {}


def alive(entry):
    started = _start_time(entry["pid"])
    return started is not None and started == entry["start"]


def stop_all():
    pids = _pids()
    for name in reversed(SERVICES):
        entry = pids.get(name)
        if not entry or not alive(entry):
            continue
        os.kill(entry["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 30
        while alive(entry) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(entry):
            os.kill(entry["pid"], signal.SIGKILL)
        say("stopped %s (pid %d)" % (name, entry["pid"]))


def wait_for(what, check, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit("sandbox: %s exited (%s); see %s" % (
                what, proc.returncode, path("log", what + ".log")))
        try:
            if check():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        if time.monotonic() > deadline:
            raise SystemExit("sandbox: %s not ready after %ds; see %s" % (
                what, timeout, path("log", what + ".log")))
        time.sleep(0.3)


# -- the pieces ------------------------------------------------------------


def rabbitmqctl(*args):
    subprocess.run(["rabbitmqctl", "-q", *args], check=True,
                   stdout=subprocess.DEVNULL)


def cloud_auth(minicloud, cloud):
    with open(minicloud["clouds_yaml"]) as f:
        clouds = yaml.safe_load(f)
    return clouds["clouds"][cloud]["auth"]


def admin_auth(minicloud):
    return cloud_auth(minicloud, minicloud["admin_cloud"])


def customer_project(minicloud):
    """The Keystone project the CloudStack customer's VM lands in: the
    minicloud's demo project, whose user (a member, not an admin) then
    sees the migrated server as their own."""
    return cloud_auth(minicloud, minicloud["demo_cloud"])["project_name"]


def let_cs2os_into(conn, minicloud):
    """cs2os's user (the minicloud admin) needs a role in the customer's
    project to create the server and ports there (admin: the requests
    name a compute host, which Nova lets admins only do)."""
    user = conn.identity.find_user(admin_auth(minicloud)["username"],
                                   domain_id="default")
    project = conn.identity.find_project(customer_project(minicloud),
                                         domain_id="default")
    role = conn.identity.find_role("admin")
    conn.identity.assign_project_role_to_user(project, user, role)
    return project


def write_config(minicloud, cloudstack):
    auth = admin_auth(minicloud)
    keystone = {
        "auth_type": "password", "auth_url": auth["auth_url"],
        "username": auth["username"], "password": auth["password"],
        "project_name": auth["project_name"],
        "user_domain_name": auth.get("user_domain_name", "Default"),
        "project_domain_name": auth.get("project_domain_name", "Default"),
    }
    sections = {
        "DEFAULT": {
            "host": minicloud["compute_host"],
            "transport_url": "rabbit://%s/%s" % (BROKER, VHOST),
            "log_dir": path("log"),
        },
        "api": {"bind_host": "127.0.0.1", "bind_port": API_PORT,
                "auth_strategy": "keystone"},
        "keystone_authtoken": dict(
            keystone, www_authenticate_uri=auth["auth_url"],
            region_name=minicloud["region_name"]),
        "database": {"connection": "sqlite:///%s" % path("cs2os.sqlite")},
        "openstack": dict(keystone, region_name=minicloud["region_name"],
                          interface="public"),
        "cloudstack": {"endpoint": cloudstack["endpoint"],
                       "api_key": cloudstack["api_key"],
                       "secret_key": cloudstack["secret_key"],
                       "job_poll_interval": 0.5,
                       "project_map": "%s:%s" % (
                           cloudstack["owner"],
                           customer_project(minicloud))},
        "conductor": {"overlay_transport": "path",
                      "primary_storage_mount":
                          cloudstack["primary_storage_mount"],
                      "image_spool_dir": path("spool")},
        "agent": {"instances_path": minicloud["instances_path"],
                  "allowed_source_roots":
                      cloudstack["primary_storage_mount"]},
        "libvirt": {"connection_uri": minicloud["libvirt_uri"]},
    }
    lines = []
    for section, options in sections.items():
        lines.append("[%s]" % section)
        lines += ["%s = %s" % item for item in options.items()]
        lines.append("")
    write_private(path("cs2os.conf"), "\n".join(lines))


def register_in_catalog(conn, region):
    """Service type cs2os, public and internal endpoints, made afresh."""
    for service in conn.identity.services(type="cs2os"):
        for endpoint in conn.identity.endpoints(service_id=service.id):
            conn.identity.delete_endpoint(endpoint)
        conn.identity.delete_service(service)
    service = conn.identity.create_service(
        name="cs2os", type="cs2os",
        description="cs2os: CloudStack to OpenStack migrations")
    url = "http://127.0.0.1:%d" % API_PORT
    for interface in ("public", "internal"):
        conn.identity.create_endpoint(service_id=service.id, url=url,
                                      interface=interface, region_id=region)
    return url


def make_network(conn):
    """The Neutron network the CloudStack VM's NIC is mapped to."""
    remove_network(conn)
    # Shared: the customer's port is on it, and the customer sees it.
    network = conn.network.create_network(name=NETWORK, shared=True)
    conn.network.create_subnet(network_id=network.id, ip_version=4,
                               cidr=SUBNET, enable_dhcp=False, name=NETWORK)
    return network


def remove_network(conn):
    for network in conn.network.networks(name=NETWORK):
        for port in conn.network.ports(network_id=network.id):
            conn.network.delete_port(port)
        conn.network.delete_network(network)


def unregister(conn):
    for service in conn.identity.services(type="cs2os"):
        for endpoint in conn.identity.endpoints(service_id=service.id):
            conn.identity.delete_endpoint(endpoint)
        conn.identity.delete_service(service)


def openstack_cli(minicloud, *args, capture=False, cloud=None):
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=minicloud["clouds_yaml"],
               OS_CLOUD=cloud or minicloud["admin_cloud"])
    return subprocess.run([os.path.join(BIN, "openstack"), *args], env=env,
                          check=False, text=True,
                          stdout=subprocess.PIPE if capture else None)


# -- the report ------------------------------------------------------------


# -- commands --------------------------------------------------------------


def up(args):
    minicloud = load_json(os.path.join(MINICLOUD, "minicloud.json"))
    if _pids():
        say("a previous sandbox is recorded; taking it down first")
        down(args)
    for sub in ("log", "spool"):
        os.makedirs(path(sub), mode=0o755, exist_ok=True)
    # qemu runs as libvirt-qemu and must reach the guest disks below.
    os.chmod(STATE, 0o755)  # noqa: S103
    rabbitmqctl("add_vhost", VHOST)
    rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")

    say("CloudStack: a KVM host with VM %s running on NFS primary storage "
        "layout, and the CloudStack API" % args.vm_name)
    proc = start("cloudstack", [
        sys.executable, os.path.join(REPO, "tools", "sandbox",
                                     "cloudstack_host.py"),
        "--state-dir", STATE, "--vm-name", args.vm_name,
        "--written-mib", str(args.written_mib)])
    wait_for("cloudstack",
             lambda: os.path.exists(path("cloudstack.json")), proc)
    cloudstack = load_json(path("cloudstack.json"))
    say("  the VM's guest printed %r from its CloudStack disk"
        % cloudstack["guest_message"])

    write_config(minicloud, cloudstack)
    conf = ["--config-file", path("cs2os.conf")]
    subprocess.run([os.path.join(BIN, "cs2os-manage"), *conf, "db", "sync"],
                   check=True, stdout=subprocess.DEVNULL)
    conn = openstack.connect(cloud=minicloud["admin_cloud"],
                             load_yaml_config=True)
    url = register_in_catalog(conn, minicloud["region_name"])
    network = make_network(conn)
    say("Neutron: shared network %s with subnet %s for the VM's NIC" % (
        network.name, SUBNET))
    project = let_cs2os_into(conn, minicloud)
    say("Keystone: CloudStack account %s maps to project %s (%s); cs2os's "
        "user has the admin role there" % (cloudstack["owner"],
                                           project.name, project.id))
    say("Keystone catalog: service type cs2os at %s" % url)
    procs = {}
    for name in ("cs2os-api", "cs2os-conductor", "cs2os-agent"):
        procs[name] = start(name, [os.path.join(BIN, name), *conf])
    wait_for("cs2os-api", lambda: urllib.request.urlopen(  # noqa: S310
        url + "/", timeout=2).status == 200, procs["cs2os-api"])
    wait_for("cs2os-conductor", lambda: openstack_cli(
        minicloud, "cs2os", "migration", "list", "-f", "value",
        capture=True).returncode == 0, procs["cs2os-conductor"])
    say("cs2os-api, cs2os-conductor and cs2os-agent (host %s) are up; "
        "logs in %s" % (minicloud["compute_host"], path("log")))

    command = ["cs2os", "import", cloudstack["vm_name"], "--host",
               minicloud["compute_host"], "--network",
               "%s=%s" % (cloudstack["network"], NETWORK), "--wait",
               "-f", "json"]
    print()
    print("$ openstack %s" % " ".join(command), flush=True)
    done = openstack_cli(minicloud, *command, capture=True)
    print(done.stdout, end="")
    if done.returncode != 0:
        say("the migration did not succeed (exit %d); logs in %s"
            % (done.returncode, path("log")))
        return done.returncode
    migration_id = json.loads(done.stdout)["id"]
    write_private(path("openrc"), (
        "export OS_CLIENT_CONFIG_FILE=%s\nexport OS_CLOUD=%s\n"
        "export PATH=%s:$PATH\n" % (minicloud["clouds_yaml"],
                                    minicloud["admin_cloud"], BIN)))
    ok = report.report(minicloud, cloudstack, STATE,
                       _api_record(minicloud, migration_id), conn)
    # What the customer sees, as the demo project's member (not admin).
    seen = report.customer_view(
        minicloud, json.loads(done.stdout)["resources"]["server_id"],
        lambda *args: openstack_cli(minicloud, *args, capture=True,
                                    cloud=minicloud["demo_cloud"]))
    ok = ok and seen
    return 0 if ok else 1


def _api_record(minicloud, migration_id):
    # The raw record (events with timestamps), through the catalog; a new
    # connection, since the first one's token predates the cs2os entry.
    conn = openstack.connect(cloud=minicloud["admin_cloud"],
                             load_yaml_config=True)
    resp = conn.session.get("/v1/migrations/" + migration_id,
                            endpoint_filter={"service_type": "cs2os",
                                             "interface": "public"})
    return resp.json()["migration"]


def _migration_ids():
    try:
        db = sqlite3.connect("file:%s?mode=ro" % path("cs2os.sqlite"),
                             uri=True)
    except sqlite3.Error:
        return set()
    try:
        return {row[0] for row in db.execute("SELECT id FROM migrations")}
    except sqlite3.Error:
        return set()
    finally:
        db.close()


def delete_servers(conn):
    """The Nova servers the sandbox's migrations made, and no other."""
    ids = _migration_ids()
    servers = [s for s in conn.compute.servers(all_projects=True)
               if (s.metadata or {}).get("cs2os_migration_id") in ids]
    for server in servers:
        conn.compute.delete_server(server)
        say("deleting Nova server %s (%s)" % (server.name, server.id))
    for server in servers:
        conn.compute.wait_for_delete(server, wait=120)


def down(args):
    stop_all()
    try:
        minicloud = load_json(os.path.join(MINICLOUD, "minicloud.json"))
        conn = openstack.connect(cloud=minicloud["admin_cloud"],
                                 load_yaml_config=True)
        delete_servers(conn)
        remove_network(conn)
        unregister(conn)
    except Exception as exc:  # noqa: BLE001 - the minicloud may be gone
        say("servers and catalog entry not removed (%s)" % exc)
    try:
        rabbitmqctl("delete_vhost", VHOST)
    except (subprocess.CalledProcessError, FileNotFoundError):
        pass
    shutil.rmtree(STATE, ignore_errors=True)
    say("down")
    return 0


def status(args):
    pids = _pids()
    running = 0
    for name in SERVICES:
        entry = pids.get(name)
        state = "running (pid %d)" % entry["pid"] if entry and alive(
            entry) else "not running"
        running += state.startswith("running")
        print("%-16s %s" % (name, state))
    return 0 if running == len(SERVICES) else 3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up")
    p_up.add_argument("--vm-name", default="web-1")
    p_up.add_argument("--written-mib", type=int, default=96)
    sub.add_parser("down")
    sub.add_parser("status")
    args = parser.parse_args()
    os.environ.setdefault("OS_CLIENT_CONFIG_FILE", os.path.join(
        MINICLOUD, "clouds.yaml"))
    return {"up": up, "down": down, "status": status}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
