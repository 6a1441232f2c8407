"""Who owns what in the CloudStack stand-in: domains, projects, SSH key
pairs, security groups, and the commands that list them.

Shapes are those of CloudStack's DomainResponse, ProjectResponse,
SSHKeyPairResponse, SecurityGroupResponse and SecurityGroupRuleResponse,
VMUserDataResponse, filled as DomainJoinDaoImpl, ProjectJoinDaoImpl,
ApiResponseHelper.createSSHKeyPairResponse and SecurityGroupJoinDaoImpl fill
them; the resource limits and counts of domains and projects are left out.

A CloudStack project owns its resources through its own account
(ProjectManagerImpl.createProject: "PrjAcct-<name>-<owner's domain id>", of
type PROJECT, in the project's domain); ``add_project`` makes that account,
and a project's VMs, key pairs and groups belong to it.  Which of them a
list shows: cloudstack_handlers._scope.
"""

import base64
import dataclasses
import hashlib

from tools.testbed import cloudstack_handlers as handlers
from tools.testbed import cloudstack_model as model

PROTOCOLS = ("tcp", "udp", "icmp", "all")


@dataclasses.dataclass(eq=False)
class Domain:
    name: str
    internal_id: int
    parent: "Domain" = None
    id: str = dataclasses.field(default_factory=model.new_id)
    created: str = dataclasses.field(default_factory=model.timestamp)

    @property
    def path(self):
        """As in the domain table: "/" (ROOT), "/sub/", "/sub/leaf/"."""
        if self.parent is None:
            return "/"
        return "%s%s/" % (self.parent.path, self.name)

    @property
    def pretty_path(self):
        """getPrettyDomainPath: "ROOT", "ROOT/sub", "ROOT/sub/leaf"."""
        return "ROOT" + self.path[:-1]

    @property
    def level(self):
        return 0 if self.parent is None else self.parent.level + 1


@dataclasses.dataclass(eq=False)
class Project:
    name: str
    internal_id: int
    domain: Domain
    account: model.Account = None  # the project's own account
    owner: model.Account = None  # its project admin, if any
    displaytext: str = None
    id: str = dataclasses.field(default_factory=model.new_id)
    created: str = dataclasses.field(default_factory=model.timestamp)
    state: str = "Active"


@dataclasses.dataclass(eq=False)
class KeyPair:
    name: str
    account: model.Account  # a project's key pair: the project account
    publickey: str  # "<type> <base64 blob>", as registerSSHKeyPair keeps it
    fingerprint: str
    id: str = dataclasses.field(default_factory=model.new_id)


@dataclasses.dataclass(eq=False)
class Rule:
    protocol: str
    startport: int = None  # icmp: the ICMP type, as CloudStack keeps it
    endport: int = None  # icmp: the ICMP code
    cidr: str = None
    group: "SecurityGroup" = None  # a rule that allows another group
    id: str = dataclasses.field(default_factory=model.new_id)


@dataclasses.dataclass(eq=False)
class SecurityGroup:
    name: str
    description: str
    account: model.Account
    ingress: list = dataclasses.field(default_factory=list)
    egress: list = dataclasses.field(default_factory=list)
    id: str = dataclasses.field(default_factory=model.new_id)


def fingerprint(publickey):
    """SSHKeysHelper.getPublicKeyFingerprint: the MD5 of the decoded key
    blob, lowercase hex pairs joined by ":"."""
    blob = base64.b64decode(publickey.split(" ")[1])
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 (CloudStack's)
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _account(owner):
    """An owner given as a model.Account or a Project: its account."""
    return owner.account if isinstance(owner, Project) else owner


def _rule(spec):
    """A Rule from {protocol, startport, endport, icmptype, icmpcode, cidr,
    securitygroup (a SecurityGroup)}."""
    protocol = str(spec.get("protocol", "all")).lower()
    if protocol not in PROTOCOLS and not protocol.isdigit():
        raise ValueError("Invalid protocol %s" % protocol)
    if protocol == "icmp":
        ports = spec.get("icmptype"), spec.get("icmpcode")
    else:
        ports = spec.get("startport"), spec.get("endport")
    group = spec.get("securitygroup")
    return Rule(protocol, *ports,
                cidr=None if group else spec.get("cidr", "0.0.0.0/0"),
                group=group)


# -- building the cloud (mixed into cloudstack_api.FakeCloudStack) ---------


class OwnersMixin:
    def _init_owners(self):
        self.root_domain = Domain("ROOT", 1)  # the ROOT domain is id 1
        self.domains, self.projects = [self.root_domain], []
        self.keypairs, self.security_groups = [], []

    def add_domain(self, name, parent=None):
        """A sub-domain of ``parent`` (ROOT by default)."""
        parent = parent or self.root_domain
        with self.lock:
            if any(d.parent is parent and d.name.lower() == name.lower()
                   for d in self.domains):
                raise ValueError("Domain with name %s already exists for "
                                 "the parent id=%s" % (name, parent.id))
            domain = Domain(name, len(self.domains) + 1, parent)
            self.domains.append(domain)
            return domain

    def add_project(self, name, domain=None, owner=None, displaytext=None):
        """A project in ``domain`` (the owner's, else ROOT) with its own
        project account; ``owner``: the model.Account that administers it
        (listProjects without listall shows a caller its own projects)."""
        domain = domain or (owner.domain if owner else self.root_domain)
        with self.lock:
            project = Project(name, len(self.projects) + 1, domain,
                              owner=owner, displaytext=displaytext or name)
            project.account = model.Account(
                "PrjAcct-%s-%d" % (name, (owner.domain if owner else domain)
                                   .internal_id),
                admin=False, apikey=None, secretkey=None,
                internal_id=self._next_account, domain=domain,
                project=project)
            self._next_account += 1
            self.accounts.append(project.account)
            self.projects.append(project)
            return project

    def add_ssh_keypair(self, owner, name, publickey):
        """registerSSHKeyPair for an account or a Project."""
        account = _account(owner)
        parts = publickey.split()
        if len(parts) < 2:
            raise ValueError("Public key is invalid")
        key = "%s %s" % (parts[0], parts[1])  # getPublicKeyFromKeyMaterial
        with self.lock:
            if any(k.account is account and k.name == name
                   for k in self.keypairs):
                raise ValueError("A key pair with name '%s' already exists."
                                 % name)
            pair = KeyPair(name, account, key, fingerprint(key))
            self.keypairs.append(pair)
            return pair

    def add_security_group(self, owner, name, description=None, ingress=(),
                           egress=()):
        """A security group of an account or a Project with its rules."""
        group = SecurityGroup(name, description or name, _account(owner),
                              [_rule(r) for r in ingress],
                              [_rule(r) for r in egress])
        return self._add(self.security_groups, group)

    def _dress(self, vm, tags, details, keypairs, userdata, securitygroups):
        """What add_vm's keyword arguments give the VM."""
        vm.tags, vm.details = dict(tags or {}), dict(details or {})
        for name in keypairs or ():
            pair = name if isinstance(name, KeyPair) else next(
                (k for k in self.keypairs
                 if k.account is vm.account and k.name == name), None)
            if pair is None:  # UserVmManagerImpl's words
                raise ValueError("Not all specified keypairs exist")
            vm.keypairs.append(pair)
        if vm.keypairs:
            # As UserVmManagerImpl does on deploy: the public keys and the
            # names, in the VM's details.
            vm.details.setdefault("SSH.PublicKey", "".join(
                k.publickey.strip() + "\n" for k in vm.keypairs))
            vm.details.setdefault("SSH.KeyPairNames",
                                  ",".join(k.name for k in vm.keypairs))
        if userdata is not None:
            data = userdata.encode() if isinstance(userdata, str) \
                else userdata
            vm.userdata = base64.b64encode(data).decode()
        vm.securitygroups = list(securitygroups or ())


# -- rendering -------------------------------------------------------------


def render_domain(cloud, domain):
    return model._clean({
        "id": domain.id,
        "name": domain.name,
        "level": domain.level,
        "parentdomainid": domain.parent.id if domain.parent else None,
        "parentdomainname": domain.parent.name if domain.parent else None,
        "haschild": any(d.parent is domain for d in cloud.domains),
        "path": domain.pretty_path,
        "state": "Active",
        "created": domain.created,
    })


def render_project(project):
    return model._clean({
        "id": project.id,
        "name": project.name,
        "displaytext": project.displaytext,
        "domainid": project.domain.id,
        "domain": project.domain.name,
        "domainpath": project.domain.pretty_path,
        "owner": [{"account": project.owner.name}] if project.owner else [],
        "projectaccountname": project.account.name,
        "state": project.state,
        "tags": [],
        "created": project.created,
    })


def render_keypair(pair):
    owner = model.owner_fields(pair.account, path=False)
    return model._clean({"id": pair.id, "name": pair.name,
                         "account": owner["account"],
                         "domainid": owner["domainid"],
                         "domain": owner["domain"],
                         "projectid": owner["projectid"],
                         "project": owner["project"],
                         "fingerprint": pair.fingerprint})


def render_rule(rule):
    icmp = rule.protocol == "icmp"
    return model._clean({
        "ruleid": rule.id,
        "protocol": rule.protocol,
        "icmptype": rule.startport if icmp else None,
        "icmpcode": rule.endport if icmp else None,
        "startport": None if icmp else rule.startport,
        "endport": None if icmp else rule.endport,
        "securitygroupname": rule.group.name if rule.group else None,
        "account": rule.group.account.name if rule.group else None,
        "cidr": rule.cidr,
        "tags": [],
    })


def render_security_group(cloud, group):
    vms = [vm.id for vm in cloud.vms
           if group in vm.securitygroups and not vm.removed]
    return model._clean({
        "id": group.id,
        "name": group.name,
        "description": group.description,
        **model.owner_fields(group.account),
        "ingressrule": [render_rule(r) for r in group.ingress],
        "egressrule": [render_rule(r) for r in group.egress],
        "tags": [],
        "virtualmachinecount": len(vms),
        "virtualmachineids": vms,
    })


# -- commands --------------------------------------------------------------


@handlers.command("listDomains", admin_only=True)
def list_domains(cloud, caller, params, name):
    # DomainQueryServiceImpl: a root admin sees every domain, listall or
    # not; name and level match exactly.
    domains = list(cloud.domains)
    if "id" in params:
        domains = [handlers._lookup(cloud, domains, name, "id", params["id"])]
    domains = [d for d in domains
               if params.get("name", d.name) == d.name
               and params.get("level", str(d.level)) == str(d.level)]
    return handlers._list("domain", [render_domain(cloud, d) for d in domains],
                          params, name)


@handlers.command("listProjects")
def list_projects(cloud, caller, params, name):
    # QueryManagerImpl.listProjectsInternal: without listall even a root
    # admin sees only the projects it belongs to (id or not); the newest
    # first (Filter "id", descending).
    projects = list(cloud.projects)
    if "id" in params:
        projects = [handlers._lookup(cloud, projects, name, "id",
                                     params["id"])]
    listall = caller.admin and handlers._true(params, "listall")
    projects = [p for p in reversed(projects)
                if (listall or p.owner is caller)
                and params.get("name", p.name) == p.name
                and params.get("state", p.state).lower() == p.state.lower()]
    return handlers._list("project", [render_project(p) for p in projects],
                          params, name)


@handlers.command("listSSHKeyPairs")
def list_keypairs(cloud, caller, params, name):
    # ManagementServerImpl.listSSHKeyPairs: buildACLSearchParameters, then
    # name and fingerprint match exactly.
    pairs = list(cloud.keypairs)
    if "id" in params:
        pairs = [handlers._lookup(cloud, pairs, name, "id", params["id"])]
    visible = handlers._scope(cloud, caller, params, name)
    pairs = [p for p in pairs if visible(p.account)
             and params.get("name", p.name) == p.name
             and params.get("fingerprint", p.fingerprint) == p.fingerprint]
    return handlers._list("sshkeypair", [render_keypair(p) for p in pairs],
                          params, name)


@handlers.command("listSecurityGroups")
def list_security_groups(cloud, caller, params, name):
    # QueryManagerImpl.searchForSecurityGroupsInternal: with a
    # virtualmachineid, that VM's groups (after an access check) and
    # nothing else; otherwise buildACLSearchParameters and an exact name.
    if "virtualmachineid" in params:
        vm = handlers._lookup(cloud, cloud.vms, name, "virtualmachineid",
                              params["virtualmachineid"])
        if not (caller.admin or vm.account is caller):
            raise handlers.ApiError(531, "Account %s does not have "
                                    "permission to access VM %s"
                                    % (caller.name, vm.id))
        groups = list(vm.securitygroups)
    else:
        groups = list(cloud.security_groups)
        if "id" in params:
            groups = [handlers._lookup(cloud, groups, name, "id",
                                       params["id"])]
        visible = handlers._scope(cloud, caller, params, name)
        wanted = params.get("securitygroupname")
        groups = [g for g in groups if visible(g.account)
                  and wanted in (None, g.name)]
    return handlers._list(
        "securitygroup", [render_security_group(cloud, g) for g in groups],
        params, name)


@handlers.command("getVirtualMachineUserData", admin_only=True,
                  required=("virtualmachineid",))
def get_userdata(cloud, caller, params, name):
    # GetVMUserDataCmd (an admin command): VMUserDataResponse, object name
    # "virtualmachineuserdata"; the user data as CloudStack keeps it, base64.
    vm = handlers._lookup(cloud, cloud.vms, name, "virtualmachineid",
                          params["virtualmachineid"])
    if vm.removed:
        raise handlers.ApiError(431, "Unable to find virtual machine with "
                                "id %s" % vm.internal_id)
    return {"virtualmachineuserdata": model._clean(
        {"virtualmachineid": vm.id, "userdata": vm.userdata})}
