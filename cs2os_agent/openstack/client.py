"""Glance and Nova through openstacksdk, as the conductor needs them.

Every wait has a deadline and every failure becomes a cs2os exception that
names the server or image, so a migration record says what went wrong.
"""

import time

import openstack
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from openstack import exceptions as sdk_exc
from oslo_log import log as logging

from cs2os_agent.common import backoff
from cs2os_agent.common import exception
from cs2os_agent.conf import openstack as openstack_conf

LOG = logging.getLogger(__name__)

# 2.74: host on POST /servers (boot on the node whose agent adopts the
# disk); it includes 2.37 (networks "none").
COMPUTE_MICROVERSION = "2.74"

# Metadata and image properties cs2os sets, so that a retry finds what an
# earlier attempt created instead of creating it twice.
MIGRATION_KEY = "cs2os_migration_id"
# The server tag that finds a migration's server without listing them all
# (Nova filters on tags; not on metadata).
MIGRATION_TAG = "cs2os-migration:%s"
TEMPLATE_KEY = "cs2os_cloudstack_template_id"
FINGERPRINT_KEY = "cs2os_template_fingerprint"
HASH_KEY = "cs2os_template_sha512"
PLACEHOLDER_KEY = "cs2os_placeholder"
# The template's guest-visible bytes (what Nova's raw base D holds): the
# proof a warm migration's shallow mirror needs that D == B.
GUEST_DIGEST_KEY = "cs2os_template_guest_sha256"
GUEST_SIZE_KEY = "cs2os_template_virtual_size"


# The auth options that scope a token; a connection to a target project
# replaces them all with that project's id.
_SCOPE_OPTIONS = ("project_id", "project_name", "project_domain_id",
                  "project_domain_name", "domain_id", "domain_name",
                  "system_scope", "trust_id")


def connect(conf, project_id=None):
    """A Connection as cs2os's [openstack] user; ``project_id``: scoped to
    that project instead of the configured one (the user needs a role
    there)."""
    group = openstack_conf.GROUP
    overrides = {}
    if project_id is not None:
        loader = ks_loading.get_plugin_loader(conf[group].auth_type)
        dests = {o.dest for o in loader.get_options()}
        overrides = {k: None for k in _SCOPE_OPTIONS if k in dests}
        overrides["project_id"] = project_id
    auth = ks_loading.load_auth_from_conf_options(conf, group, **overrides)
    session = ks_loading.load_session_from_conf_options(conf, group,
                                                        auth=auth)
    return openstack.connection.Connection(
        session=session,
        region_name=conf[group].region_name,
        interface=conf[group].interface,
        compute_api_version=COMPUTE_MICROVERSION,
    )


def find_one(finder, service, kind, ref, hint):
    """The one resource ``finder`` (an openstacksdk find_*) has with id or
    name ``ref``: Invalid when there is none or the name is ambiguous
    (``hint`` says what to do then), OpenStackError when the service
    fails."""
    try:
        found = finder(ref, ignore_missing=True)
    except sdk_exc.DuplicateResource:
        raise exception.Invalid(
            reason="%s %s name %s is ambiguous; %s"
            % (service, kind, ref, hint)) from None
    except sdk_exc.SDKException as exc:
        raise exception.OpenStackError(
            operation="find %s %s %s" % (service, kind, ref),
            reason=exc) from None
    if found is None:
        raise exception.Invalid(
            reason="%s has no %s with id or name %s" % (service, kind, ref))
    return found


def own_identity(conn):
    """(project id, user id) of cs2os's own connection, from its token.

    What cs2os creates belongs to them; what it finds again must too.
    """
    operation = "find the project and user of cs2os's [openstack] " \
        "credentials"
    try:
        project_id = conn.current_project_id
        user_id = conn.current_user_id
    except (sdk_exc.SDKException, ks_exc.ClientException) as exc:
        raise exception.OpenStackError(operation=operation,
                                       reason=exc) from None
    if not project_id or not user_id:
        raise exception.OpenStackError(
            operation=operation,
            reason="the token is not scoped to a project (project %s, user "
            "%s)" % (project_id, user_id))
    return project_id, user_id


class OpenStackClient:
    def __init__(self, conn, wait_timeout=600, poll_interval=2):
        self.conn = conn
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval

    def own_identity(self):
        """(project id, user id) this client acts as."""
        return own_identity(self.conn)

    # -- images ------------------------------------------------------------

    def find_template_image(self, template_id, fingerprint):
        """An active image made from this very template file, or None."""
        for image in self.conn.image.images(
                **{TEMPLATE_KEY: template_id}):
            props = image.properties or {}
            if (image.status == "active"
                    and props.get(FINGERPRINT_KEY) == fingerprint):
                return image
        return None

    def find_placeholder_image(self):
        """cs2os's blank boot image for volumes without a backing file."""
        for image in self.conn.image.images(**{PLACEHOLDER_KEY: "1"}):
            # The filter is a hint: check the property on what came back.
            props = image.properties or {}
            if image.status == "active" and props.get(PLACEHOLDER_KEY) == "1":
                return image
        return None

    def upload_image(self, name, path, disk_format, properties):
        """Upload a local file; returns the active image."""
        try:
            with open(path, "rb") as data:
                # allow_duplicates: openstacksdk would otherwise look the
                # name up first, and fail once Glance holds two images of
                # it.  CloudStack templates share names (per-zone copies,
                # per-account uploads); cs2os finds its images by template
                # id and file fingerprint (find_template_image), never by
                # name.
                image = self.conn.image.create_image(
                    name=name, data=data, disk_format=disk_format,
                    container_format="bare", validate_checksum=False,
                    allow_duplicates=True, wait=True,
                    timeout=self.wait_timeout, **properties)
        except sdk_exc.SDKException as exc:
            raise exception.OpenStackError(
                operation="upload image %s" % name, reason=exc) from None
        return self.conn.image.get_image(image.id)

    def get_image(self, image_id):
        return self.conn.image.get_image(image_id)

    def set_image_properties(self, image_id, properties):
        """Add ``properties`` to an image.  By id: given the fetched
        resource, openstacksdk's patch is refused (409) by Glance."""
        self.conn.image.update_image(image_id, **properties)

    def delete_image(self, image_id):
        self.conn.image.delete_image(image_id)

    def share_image(self, image_id, project_id):
        """Let ``project_id`` boot the image: a member of a shared image
        (public and community images need nothing; an image stays registered
        once, in cs2os's project, however many projects use it)."""
        operation = "share image %s with project %s" % (image_id, project_id)
        try:
            image = self.conn.image.get_image(image_id)
            if (image.visibility in ("public", "community")
                    or image.owner == project_id):
                return
            if image.visibility != "shared":
                self.conn.image.update_image(image_id, visibility="shared")
            if self.conn.image.find_member(project_id, image_id) is None:
                self.conn.image.add_member(image_id, member_id=project_id)
        except sdk_exc.SDKException as exc:
            raise exception.OpenStackError(operation=operation,
                                           reason=exc) from None

    def accept_image(self, image_id):
        """As the member project: accept a shared image, so that its users
        see it in their image list too (booting needs no more than
        membership)."""
        project_id, _user_id = own_identity(self.conn)
        try:
            member = self.conn.image.find_member(project_id, image_id)
            if member is not None and member.status != "accepted":
                self.conn.image.update_member(member, image_id,
                                              status="accepted")
        except sdk_exc.SDKException as exc:
            raise exception.OpenStackError(
                operation="accept image %s in project %s" % (image_id,
                                                              project_id),
                reason=exc) from None

    # -- key pairs ---------------------------------------------------------

    def ensure_keypair(self, name, public_key):
        """A key pair ``name`` of this client's user holding
        ``public_key``; True if it was there already.  One of that name
        with another key is refused, never replaced."""
        operation = "create key pair %s" % name
        try:
            found = self.conn.compute.find_keypair(name, ignore_missing=True)
            if found is None:
                self.conn.compute.create_keypair(name=name,
                                                 public_key=public_key)
                return False
        except sdk_exc.SDKException as exc:
            raise exception.OpenStackError(operation=operation,
                                           reason=exc) from None
        if found.public_key.split()[:2] != public_key.split()[:2]:
            raise exception.OpenStackError(
                operation=operation,
                reason="a key pair of that name holds another public key")
        return True

    # -- projects ----------------------------------------------------------

    def find_project(self, ref):
        """The enabled Keystone project with id or name ``ref``; Invalid
        when there is none, or two of that name (in different domains)."""
        project = find_one(self.conn.identity.find_project, "Keystone",
                           "project", ref,
                           "several domains have one: name it by id")
        if not project.is_enabled:
            raise exception.Invalid(
                reason="Keystone project %s (%s) is disabled"
                % (project.name, project.id))
        return project

    # -- flavors -----------------------------------------------------------

    def get_flavor(self, ref):
        flavor = self.conn.compute.find_flavor(ref, ignore_missing=True)
        if flavor is None:
            raise exception.Invalid(reason="flavor %s not found" % ref)
        return flavor

    def smallest_flavor(self, vcpus, ram_mib, disk_gib):
        fitting = [
            f for f in self.conn.compute.flavors(details=True)
            if f.vcpus >= vcpus and f.ram >= ram_mib and f.disk >= disk_gib
        ]
        if not fitting:
            raise exception.Invalid(
                reason="no flavor has %d vCPUs, %d MiB RAM and a %d GiB "
                "root disk; create one or name it with --flavor"
                % (vcpus, ram_mib, disk_gib))
        return min(fitting, key=lambda f: (f.disk, f.ram, f.vcpus, f.name))

    def quota_headroom(self, project_id):
        """{"instances"|"cores"|"ram": (limit, in use)} of Nova's quota
        in ``project_id`` (limit -1: unlimited)."""
        try:
            quota = self.conn.compute.get_quota_set(project_id, usage=True)
        except sdk_exc.SDKException as exc:
            raise exception.OpenStackError(
                operation="read Nova's quota of project %s" % project_id,
                reason=exc) from None
        usage = quota.usage or {}
        return {name: (int(getattr(quota, name)), int(usage.get(name) or 0))
                for name in ("instances", "cores", "ram")}

    # -- compute hosts -----------------------------------------------------

    def check_compute_host(self, host):
        services = list(self.conn.compute.services(binary="nova-compute",
                                                   host=host))
        if not services:
            raise exception.Invalid(
                reason="%s is not a nova-compute host" % host)
        service = services[0]
        if service.status != "enabled" or service.state != "up":
            raise exception.Invalid(
                reason="nova-compute on %s is %s and %s" % (
                    host, service.status, service.state))

    # -- servers -----------------------------------------------------------

    def find_server(self, migration_id):
        """The server an earlier attempt of this migration booted, or None.

        Only a server cs2os made itself is adopted: in the project of
        cs2os's own connection, created by cs2os's own user, and carrying
        the migration's id in its metadata.  Metadata alone proves nothing:
        any user can set it on a server of their own, and a server adopted
        here is later stopped, deleted on rollback, or has its disk
        replaced.
        """
        project_id, user_id = own_identity(self.conn)
        try:
            # Without all_projects Nova lists the token's project only;
            # project and user are checked again on what comes back.  The
            # tag keeps the answer to this migration's servers, however
            # many the cloud has (servers booted before cs2os tagged them
            # are not found: see doc/source/install.md, "Upgrading").
            servers = list(self.conn.compute.servers(
                details=True, tags=MIGRATION_TAG % migration_id))
        except sdk_exc.SDKException as exc:
            raise exception.OpenStackError(
                operation="find the server of migration %s" % migration_id,
                reason=exc) from None
        for server in servers:
            if ((server.metadata or {}).get(MIGRATION_KEY) == migration_id
                    and server.project_id == project_id
                    and server.user_id == user_id):
                return server
        return None

    def create_server(self, name, image_id, flavor_id, host, migration_id,
                      metadata, ports=(), tags=(), user_data=None,
                      config_drive=False, key_name=None):
        """``ports``: Neutron port ids in NIC order; none: no network.
        ``user_data``: base64, as Nova takes it."""
        kwargs = {"tags": [MIGRATION_TAG % migration_id, *tags]}
        if host:
            kwargs["host"] = host
        if user_data is not None:
            kwargs["user_data"] = user_data
        if config_drive:
            kwargs["config_drive"] = True
        if key_name:
            kwargs["key_name"] = key_name
        networks = [{"port": p} for p in ports] or "none"
        try:
            return self.conn.compute.create_server(
                name=name, image_id=image_id, flavor_id=flavor_id,
                networks=networks,
                metadata=dict(metadata, **{MIGRATION_KEY: migration_id}),
                **kwargs)
        except sdk_exc.SDKException as exc:
            raise exception.OpenStackError(
                operation="boot server %s" % name, reason=exc) from None

    def get_server(self, server_id):
        return self.conn.compute.get_server(server_id)

    def wait_server(self, server_id, status):
        """Wait for ``status``; ERROR or a deadline is a clear failure."""
        deadline = time.monotonic() + self.wait_timeout
        delays = backoff.delays(self.poll_interval)
        while True:
            server = self.conn.compute.get_server(server_id)
            if server.status == status and not server.task_state:
                return server
            if server.status == "ERROR":
                fault = (server.fault or {}).get("message", "no fault")
                raise exception.OpenStackError(
                    operation="server %s to become %s" % (server_id, status),
                    reason="it went to ERROR: %s" % fault)
            if time.monotonic() > deadline:
                raise exception.OpenStackError(
                    operation="server %s to become %s" % (server_id, status),
                    reason="still %s after %d s" % (server.status,
                                                    self.wait_timeout))
            time.sleep(next(delays))

    def stop_server(self, server_id):
        try:
            server = self.conn.compute.get_server(server_id)
            if server.status != "SHUTOFF":
                self.conn.compute.stop_server(server_id)
        except sdk_exc.HttpException as exc:
            raise exception.OpenStackError(
                operation="stop server %s" % server_id, reason=exc) from None
        return self.wait_server(server_id, "SHUTOFF")

    def start_server(self, server_id):
        self.request_start(server_id)
        return self.wait_server(server_id, "ACTIVE")

    def request_start(self, server_id):
        """Ask Nova to start the server unless it is ACTIVE; not waited for.

        StartRefused when Nova refuses outright (401, 403: not allowed;
        404: no such server), so nothing can have started.  Any other
        failure (a 409 while an earlier start runs, a 5xx, a time-out)
        leaves it open whether the server starts.
        """
        try:
            server = self.conn.compute.get_server(server_id)
            if server.status != "ACTIVE":
                self.conn.compute.start_server(server_id)
        except sdk_exc.HttpException as exc:
            kind = exception.StartRefused if exc.status_code in (
                401, 403, 404) else exception.OpenStackError
            raise kind(operation="start server %s" % server_id,
                       reason=exc) from None

    def reset_state(self, server_id, state="active"):
        """os-resetState: Nova's record of the server says ``state`` (a
        live move: ACTIVE while its domain is loading the guest, so that
        Nova's power-state sync leaves it alone)."""
        try:
            self.conn.compute.reset_server_state(server_id, state)
        except sdk_exc.HttpException as exc:
            raise exception.OpenStackError(
                operation="reset the state of server %s to %s"
                % (server_id, state), reason=exc) from None

    def delete_server(self, server_id):
        try:
            self.conn.compute.delete_server(server_id)
            self.conn.compute.wait_for_delete(
                self.conn.compute.get_server(server_id),
                wait=self.wait_timeout)
        except sdk_exc.NotFoundException:
            pass
