"""The migrated VM is its owner's: servers, ports and image membership land
in the Keystone project the CloudStack owner maps to, and that project's
own users (not admins) see them, and see only their own migrations.

Real Keystone users in two real projects of the minicloud: alice, a member
of acme, and bob, a reader of globex.  cs2os's conductor runs as the
minicloud's admin with a role on both, as the README tells operators.
"""

import base64
import contextlib
import os
import secrets
import subprocess
import uuid

import openstack
import pytest
import requests

from cs2os_agent import qemu_img
from cs2os_agent.common import context as cs2os_context
from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import keystone_api
from tests.e2e.conftest import module_conductor
from tests.e2e.conftest import shared_network
from tests.e2e.conftest import target_project
from tools.testbed import images
from tools.testbed.harness import wait_console
from tools.testbed.harness import wait_state
from tools.testbed.minicloud import admin_auth

OCTETS = (int(RUN_ID[0:2], 16), int(RUN_ID[2:4], 16))
USER_DATA = "#cloud-config\nhostname: web-1\n"


class Customer:
    def __init__(self, key, project, user, password, role):
        self.key, self.project, self.user = key, project, user
        self.password, self.role = password, role

    def connect(self, minicloud):
        auth = admin_auth(minicloud)
        return openstack.connect(
            auth_url=auth["auth_url"], username=self.user.name,
            password=self.password, project_id=self.project.id,
            user_domain_name="Default", region_name=auth["region_name"],
            interface="public")


@pytest.fixture(scope="module")
def customers(minicloud):
    """acme (alice, member) and globex (bob, reader), target projects
    where cs2os's user has the admin role."""
    idc = minicloud.conn.identity
    roles = {r.name: r for r in idc.roles()}
    made = {}
    with contextlib.ExitStack() as stack:
        for key, person, role in (("acme", "alice", "member"),
                                  ("globex", "bob", "reader")):
            project = stack.enter_context(target_project(
                minicloud, "cs2os-e2e-%s-%s" % (RUN_ID, key)))
            password = secrets.token_urlsafe(18)
            user = idc.create_user(
                name="cs2os-e2e-%s-%s" % (RUN_ID, person),
                password=password, domain_id="default",
                default_project_id=project.id)
            stack.callback(idc.delete_user, user)
            idc.assign_project_role_to_user(project, user, roles[role])
            made[key] = Customer(key, project, user, password, role)
        yield made


@pytest.fixture(scope="module")
def network(minicloud):
    """A shared network of the admin's: the customers' ports live on it."""
    with shared_network(minicloud, "cs2os-owners-%s" % RUN_ID,
                        "10.%d.%d.0/24" % OCTETS) as net:
        yield net


@pytest.fixture(scope="module")
def public_key(workdir, minicloud):
    """A real OpenSSH public key (ssh-keygen's); afterwards, the Nova key
    pairs the migrations made of it."""
    path = os.path.join(workdir, "owners-key-%s" % RUN_ID)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    path], check=True)
    with open(path + ".pub") as f:
        key = f.read().strip()
    yield key
    for pair in minicloud.conn.compute.keypairs():
        if pair.public_key.split()[:2] == key.split()[:2]:
            minicloud.conn.compute.delete_keypair(pair)


@pytest.fixture(scope="module")
def owners(cloud, public_key):
    """CloudStack owners: account acme-<run> and a CloudStack project
    erp-<run>, both mapped; account stranger-<run>, not mapped.  acme and
    stranger each registered the same public key as key pair "deploy"."""
    made = {
        "acme": cloud.add_account("acme-%s" % RUN_ID, admin=False),
        "erp": cloud.add_project("erp-%s" % RUN_ID),
        "stranger": cloud.add_account("stranger-%s" % RUN_ID, admin=False),
        "network": cloud.add_network(cloud.kvm_host.zone,
                                     "cs-owners-%s" % RUN_ID),
    }
    for key in ("acme", "stranger"):
        cloud.add_ssh_keypair(made[key], "deploy", public_key)
    return made


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud, minicloud, agent,
              conductor_api, cloudstack_root, customers, owners):
    """This module's conductor: acme's account by domain/account, the
    CloudStack project by id; no catch-all."""
    proc = module_conductor(
        request, workdir, services, cloud, minicloud, conductor_api,
        cloudstack_root, project_map="ROOT/%s:%s,%s:%s" % (
            owners["acme"].name, customers["acme"].project.name,
            owners["erp"].id, customers["globex"].project.id))
    yield proc
    proc.stop()


def owned_vm(cloud, cloudstack_root, owners, index, **owner):
    """A running CloudStack VM of ``account`` or ``project``, one NIC."""
    volume = images.make_cloudstack_volume(cloudstack_root)
    owner.setdefault("account", cloud.admin)
    vm = cloud.add_kvm_vm(
        "e2e-%s-%s" % (RUN_ID, uuid.uuid4().hex[:6]), volume,
        owner.pop("account"), cloud.kvm_host, offering=cloud.offering,
        nics=[(owners["network"], "10.%d.%d.%d" % (*OCTETS, 10 + index),
               "1e:%02x:%02x:00:01:%02x" % (*OCTETS, index))],
        **owner)
    vm.volume = volume
    wait_console(cloud.kvm.console(vm.instancename), volume.message)
    return vm


def migrate(conductor_api, ctxt, minicloud, network, owners, vm, **extra):
    created = conductor_api.create_migration(ctxt, dict(
        {"source": vm.name, "host": minicloud.compute_host,
         "networks": {owners["network"].name: network.id}}, **extra))
    return wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))


@pytest.fixture(scope="module")
def acme_done(conductor, conductor_api, cloud, minicloud, cloudstack_root,
              network, owners):
    ctxt = cs2os_context.RequestContext(user_id="e2e", project_id="admin")
    vm = owned_vm(cloud, cloudstack_root, owners, 1,
                  account=owners["acme"], tags={"env": "prod"},
                  details={"keyboard": "us", "Encrypted.Password": "x1"},
                  userdata=USER_DATA, keypairs=["deploy"])
    vm.displayname = "Web shop front"
    done = migrate(conductor_api, ctxt, minicloud, network, owners, vm)
    assert done["state"] == "succeeded", (done["error"], done["events"])
    return vm, done


@pytest.fixture(scope="module")
def erp_done(conductor, conductor_api, cloud, minicloud, cloudstack_root,
             network, owners):
    ctxt = cs2os_context.RequestContext(user_id="e2e", project_id="admin")
    vm = owned_vm(cloud, cloudstack_root, owners, 2, project=owners["erp"])
    done = migrate(conductor_api, ctxt, minicloud, network, owners, vm,
                   config_drive=True)
    assert done["state"] == "succeeded", (done["error"], done["events"])
    return vm, done


def test_the_server_lands_in_the_owners_project_with_its_port(
        acme_done, customers, minicloud):
    vm, done = acme_done
    acme = customers["acme"]
    assert done["target_project_id"] == acme.project.id
    assert done["result"]["project"] == {
        "id": acme.project.id, "name": acme.project.name,
        "chosen_by": "[cloudstack] project_map (ROOT/%s)" % vm.account.name}
    alice = acme.connect(minicloud)
    # alice, a member (not admin), lists her project's servers.
    servers = {s.id: s for s in alice.compute.servers()}
    server = servers[done["resources"]["server_id"]]
    assert (server.status, server.project_id) == ("ACTIVE", acme.project.id)
    ports = list(alice.network.ports(device_id=server.id))
    assert [(p.mac_address, p.project_id) for p in ports] == [
        (vm.nics[0].macaddress, acme.project.id)]
    # The template image stays cs2os's, once; acme is a member that has
    # accepted it, so alice sees it listed.
    image = alice.image.get_image(done["resources"]["image_id"])
    assert image.owner != acme.project.id
    assert image.id in {i.id for i in alice.image.images()}
    disk = os.path.join(minicloud.instances_path, server.id, "disk")
    qemu_img.compare(vm.volume.reference, disk, "qcow2", "qcow2",
                     force_share=True)


def test_the_server_carries_the_vms_identity(acme_done, customers,
                                             minicloud, public_key):
    vm, done = acme_done
    alice = customers["acme"].connect(minicloud)
    server = alice.compute.get_server(done["resources"]["server_id"])
    # Named after the VM's name (the guest's host name); the rest is
    # metadata the owner sees, secret details left out.
    assert server.name == vm.name
    meta = server.metadata
    assert (meta["cloudstack_vm_id"], meta["cloudstack_vm_name"],
            meta["cloudstack_display_name"], meta["cloudstack_account"],
            meta["cloudstack_domain"], meta["cloudstack_tag:env"],
            meta["cloudstack_detail:keyboard"]) == (
        vm.id, vm.name, "Web shop front", vm.account.name, "ROOT", "prod",
        "us")
    assert not [k for k in meta if "Password" in k]
    assert "Password" not in str(done["source"])
    # Nova filters on the tag itself: the operator's "which server was
    # CloudStack VM <id>".
    tagged = list(minicloud.conn.compute.servers(
        all_projects=True, tags="cloudstack-vm:%s" % vm.id))
    assert [s.id for s in tagged] == [server.id]
    # The user data, as CloudStack kept it (base64), is Nova's now.
    shown = minicloud.conn.compute.get_server(server.id)
    assert base64.b64decode(shown.user_data).decode() == USER_DATA
    assert done["result"]["identity"]["user_data"] is True
    assert not shown.has_config_drive
    # The key pair: cs2os's user's Nova key pair with the VM's public key,
    # named after the CloudStack one and its fingerprint.
    keypair = done["result"]["keypair"]
    assert server.key_name == keypair["name"]
    assert keypair["name"].startswith("deploy-")
    assert keypair["cloudstack_name"] == "deploy"
    assert keypair["fingerprint"] == vm.keypairs[0].fingerprint
    nova_key = minicloud.conn.compute.get_keypair(keypair["name"])
    assert nova_key.public_key.split()[:2] == public_key.split()[:2]
    # SSH details travel as the key pair, not as metadata.
    assert not [k for k in meta if k.startswith("cloudstack_detail:SSH.")]


def test_a_cloudstack_project_vm_is_mapped_by_project_id(
        erp_done, acme_done, customers, minicloud, owners):
    vm, done = erp_done
    globex = customers["globex"]
    assert done["target_project_id"] == globex.project.id
    assert done["source"]["projectid"] == owners["erp"].id
    assert done["source"]["account"] is None
    # It asked for a config drive: Nova built one beside the disk.
    server_id = done["resources"]["server_id"]
    assert minicloud.conn.compute.get_server(server_id).has_config_drive
    assert os.path.exists(os.path.join(minicloud.instances_path, server_id,
                                       "disk.config"))
    assert done["result"]["identity"]["config_drive"] is True
    bob = globex.connect(minicloud)
    # bob, a reader, sees globex's server and not acme's.
    seen = {s.id for s in bob.compute.servers()}
    assert done["resources"]["server_id"] in seen
    assert acme_done[1]["resources"]["server_id"] not in seen


def test_an_unmapped_owner_is_refused_and_a_request_may_name_the_project(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        network, owners, customers):
    vm = owned_vm(cloud, cloudstack_root, owners, 3,
                  account=owners["stranger"], keypairs=["deploy"])
    failed = migrate(conductor_api, ctxt, minicloud, network, owners, vm)
    assert failed["state"] == "failed"
    assert failed["step"] == "validate"
    assert ("CloudStack account %s of domain ROOT owns VM %s and "
            "[cloudstack] project_map has no entry for it"
            % (vm.account.name, vm.name)) in failed["error"]
    assert not failed["resources"].get("server_id")
    # Nothing landed anywhere: no server carries the migration's id.
    assert not [s for s in minicloud.conn.compute.servers(all_projects=True)
                if (s.metadata or {}).get("cs2os_migration_id")
                == failed["id"]]
    done = migrate(conductor_api, ctxt, minicloud, network, owners, vm,
                   project=customers["acme"].project.name)
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert done["target_project_id"] == customers["acme"].project.id
    assert done["result"]["project"]["chosen_by"] == "request"
    # The same public key as acme's: the same Nova key pair, reused.
    assert done["result"]["keypair"]["reused"] is True


# -- the personas, over cs2os-api with the minicloud's Keystone -------------


@pytest.fixture(scope="module")
def api(workdir, services, minicloud, conductor):
    proc = keystone_api(workdir, services, minicloud,
                        "cs2os-api-e2e-owners-%s" % RUN_ID)
    yield proc
    proc.stop()


def _as(conn, api, method, path, **kwargs):
    headers = {"X-Auth-Token": conn.session.get_token()}
    return requests.request(method, api.url + path, headers=headers,
                            timeout=30, **kwargs)


def test_each_project_sees_only_its_own_migrations(
        api, acme_done, erp_done, customers, minicloud):
    acme_id, erp_id = acme_done[1]["id"], erp_done[1]["id"]
    alice = customers["acme"].connect(minicloud)
    bob = customers["globex"].connect(minicloud)
    for conn, own, other in ((alice, acme_id, erp_id),
                             (bob, erp_id, acme_id)):
        listed = _as(conn, api, "GET", "/v1/migrations")
        assert listed.status_code == 200, listed.text
        ids = {m["id"] for m in listed.json()["migrations"]}
        assert own in ids and other not in ids
        assert _as(conn, api, "GET", "/v1/migrations/" + own) \
            .status_code == 200
        # Another project's migration does not exist for them.
        assert _as(conn, api, "GET", "/v1/migrations/" + other) \
            .status_code == 404
    admin = _as(minicloud.conn, api, "GET", "/v1/migrations")
    assert {acme_id, erp_id} <= {m["id"] for m in admin.json()["migrations"]}


def test_members_and_readers_may_not_start_or_stop_migrations(
        api, acme_done, customers, minicloud):
    alice = customers["acme"].connect(minicloud)
    created = _as(alice, api, "POST", "/v1/migrations",
                  json={"migration": {"source": acme_done[0].name}})
    assert created.status_code == 403, created.text
    cancel = _as(alice, api, "POST",
                 "/v1/migrations/%s/action" % acme_done[1]["id"],
                 json={"cancel": {}})
    assert cancel.status_code == 403, cancel.text
