"""A CloudStack management API stand-in (no real one can run here).

A WSGI app on /client/api that checks signatures exactly as ApiServer does
(cloudstack_signature), answers ``response=json`` in CloudStack's shapes
and error codes, and runs stop/start/destroy as asynchronous jobs whose VMs
are real (cloudstack_kvm.LibvirtKVM) or flags (MemoryKVM, unit tests).

Tests, the sandbox and the benchmarks build the cloud through Python::

    cloud = FakeCloudStack(cloudstack_kvm.LibvirtKVM(root))
    admin = cloud.add_account("admin")
    host = cloud.add_host(cloud.add_zone("zone-1"), "kvm-1")
    vm = cloud.add_kvm_vm("web-1", volume, admin, host)  # images.py:
    endpoint = cloud.serve()                  # CloudStackVolume
    ...
    cloud.shutdown()

Failures on demand, as a real CloudStack has them::

    # The next destroyVirtualMachine job of this VM fails the way a job
    # does when the KVM agent reports an error: jobstatus 2, jobresultcode
    # 530, jobresult {"errorcode": 530, "errortext": "agent says no"};
    # nothing is done to the VM.  ("agent says no", 3): the next 3 such
    # jobs; ("agent says no", None): every one until the entry is removed.
    cloud.fail_jobs[("destroyVirtualMachine", vm.id)] = "agent says no"

    # The next call of a command is answered with HTTP 503 and CloudStack's
    # error body (errorcode 503, that errortext); the command is not run.
    # (503, "text", 3): the next 3 calls; (503, "text", None): every one.
    cloud.fail_calls["stopVirtualMachine"] = (503, "management server busy")

    # The next call is held 5 s (or until shutdown) unanswered, so that
    # the client's timeout fires, then answered 504; the command is not
    # run.  ("timeout", 5, 3): the next 3 calls, None: every one.
    cloud.fail_calls["queryAsyncJobResult"] = ("timeout", 5)

    # The VM's owner starts it from CloudStack's UI behind cs2os's back:
    # the startVirtualMachine command, run as that account, as an async
    # job like any other (waited for; the model.Job is returned).  Not in
    # cloud.calls (what cs2os sent) but in cloud.user_calls.
    job = cloud.user_start(vm)

Every failure that fired is appended to ``cloud.injected`` as (kind, key,
text), kind "job" or "call".

Owners (cloudstack_owners): accounts in domains, VMs of projects, with
tags, details, SSH key pairs, user data and security groups::

    team = cloud.add_project("team", domain=cloud.add_domain("sub"))
    cloud.add_ssh_keypair(team, "deploy", "ssh-ed25519 AAAA...")
    vm = cloud.add_kvm_vm("web-2", volume, admin, host, project=team,
                          keypairs=["deploy"], tags={"tier": "web"})

What CloudStack does that this does not: XML responses, sessions, domain
admins, events, most commands.  Where CloudStack's behaviour was inferred
rather than read, the code says so.
"""

import base64
import http
import json
import os
import random
import socketserver
import threading
import urllib.parse
from wsgiref import simple_server

from cs2os_agent import qemu_img
from tools.testbed import cloudstack_handlers
from tools.testbed import cloudstack_kvm
from tools.testbed import cloudstack_model as model
from tools.testbed import cloudstack_owners  # its commands, OwnersMixin
from tools.testbed import cloudstack_signature as signature

API_PATH = "/client/api"
JSON_TYPE = "application/json; charset=UTF-8"  # json.content.type default
NFS = "NetworkFilesystem"
_HIDDEN = ("apikey", "signature")


class FakeCloudStack(cloudstack_owners.OwnersMixin):
    def __init__(self, kvm=None, instance_name="VM", first_vm_id=None):
        self.kvm = kvm or cloudstack_kvm.MemoryKVM()
        self.instance_name = instance_name  # the instance.name setting
        self.lock = threading.RLock()
        self.accounts, self.zones, self.hosts, self.pools = [], [], [], []
        self.templates, self.offerings, self.networks = [], [], []
        self.vms, self.volumes, self.jobs = [], [], {}
        self.job_threads, self.vm_locks = [], {}
        # Spread internal ids so two runs on one libvirtd do not clash.
        self._next_vm = first_vm_id or random.randrange(  # noqa: S311
            10, 90000)
        self._next_account = 2  # 1 is CloudStack's system account
        self._init_owners()  # the ROOT domain; projects, key pairs, groups
        self.calls = []  # (HTTP method, command, params without secrets)
        # Failures on demand (see the module docstring).
        self.fail_jobs = {}  # (command, vm id) -> text | (text, count)
        self.fail_calls = {}  # command -> (status, text[, count])
        self.injected = []  # (kind, key, text) of every failure that fired
        self.user_calls = []  # (command, vm id, account name) by user_*
        self._stopping = threading.Event()
        self._server = None
        self._thread = None

    # -- building the cloud ----------------------------------------------

    def add_account(self, name, admin=True, domain=None):
        """A root admin (``admin``) or a normal user in ``domain`` (ROOT by
        default)."""
        with self.lock:
            account = model.Account(
                name=name, admin=admin, apikey=_key(), secretkey=_key(),
                internal_id=self._next_account,
                domain=domain or self.root_domain)
            self._next_account += 1
            self.accounts.append(account)
            return account

    def add_zone(self, name):
        return self._add(self.zones, model.Zone(name))

    def add_host(self, zone, name, ipaddress="127.0.0.1"):
        return self._add(self.hosts, model.Host(name, ipaddress, zone))

    def add_storage_pool(self, zone, name, type=NFS,  # noqa: A002
                         path="/export/primary", ipaddress="127.0.0.1",
                         pool_id=None):
        pool = model.Pool(name, type, path, ipaddress, zone)
        pool.id = pool_id or pool.id
        return self._add(self.pools, pool)

    def add_template(self, zone, name, size, owner, template_id=None):
        template = model.Template(name, size, zone, owner)
        template.id = template_id or template.id
        return self._add(self.templates, template)

    def add_service_offering(self, name, cpunumber=1, cpuspeed=1000,
                             memory=64):
        return self._add(self.offerings,
                         model.Offering(name, cpunumber, cpuspeed, memory))

    def add_network(self, zone, name):
        return self._add(self.networks, model.Network(name, zone))

    def add_vm(self, name, account, host, template, offering, root_pool,
               root_path, root_size, networks=(), hypervisor="KVM",
               root_volume_id=None, nics=None, project=None, tags=None,
               details=None, keypairs=(), userdata=None, securitygroups=()):
        """A Stopped VM with its ROOT volume (file root_path on the pool).

        ``networks``: one NIC on each, addresses made up; ``nics``:
        [(network, ip, mac)] when a test needs given addresses (the first
        is the default NIC).  ``account`` deploys it; a ``project`` owns it
        then.  ``tags`` and ``details``: dicts; ``keypairs``: names of the
        owner's key pairs; ``userdata``: text (kept base64);
        ``securitygroups``: cloudstack_owners.SecurityGroup objects.
        """
        user, account = account, project.account if project else account
        with self.lock:
            while True:
                internal_id = self._next_vm
                self._next_vm += 1
                instancename = "i-%d-%d-%s" % (
                    account.internal_id, internal_id, self.instance_name)
                if not self.kvm.name_taken(instancename):
                    break
            vm = model.Vm(name, internal_id, instancename, account,
                          host.zone, template, offering, hypervisor, host,
                          user=user)
            self._dress(vm, tags, details, keypairs, userdata,
                        securitygroups)
            for index, (network, ip, mac) in enumerate(nics or ()):
                vm.nics.append(model.Nic(network, ip, mac, index,
                                         index == 0))
            for index, network in enumerate(networks):
                vm.nics.append(model.Nic(
                    network, "10.1.1.%d" % (10 + index + internal_id % 200),
                    "1e:00:%02x:%02x:%02x:%02x" % (
                        internal_id >> 16 & 255, internal_id >> 8 & 255,
                        internal_id & 255, index),
                    index, index == 0))
            self.vms.append(vm)
            root = model.Volume("ROOT-%d" % internal_id, "ROOT", root_pool,
                                root_path, root_size, vm, 0)
            root.id = root_volume_id or root_path
            self.volumes.append(root)
            return vm

    def add_data_disk(self, vm, pool, path, size, name=None):
        with self.lock:
            deviceid = 1 + sum(v.vm is vm for v in self.volumes)
            volume = model.Volume(name or "DATA-%d" % vm.internal_id,
                                  "DATADISK", pool, path, size, vm, deviceid)
            self.volumes.append(volume)
            return volume

    def add_kvm_vm(self, name, volume, account, host, offering=None,
                   networks=(), start=True, nics=None, project=None,
                   tags=None, details=None, keypairs=(), userdata=None,
                   securitygroups=()):
        """A VM on files made by images.py (make_cloudstack_volume).

        ``volume`` has pool_dir (<root>/mnt/<pool uuid>), template
        (.../<template uuid>) and overlay (.../<volume uuid>): the pool,
        template and volume ids are those uuids, as on a real NFS pool.
        ``project`` and the rest: as add_vm.
        """
        pool_id = os.path.basename(volume.pool_dir)
        pool = self._find(self.pools, pool_id) or self.add_storage_pool(
            host.zone, "primary-%s" % pool_id[:8], pool_id=pool_id)
        template_id = os.path.basename(volume.template)
        template = self._find(self.templates, template_id) or \
            self.add_template(host.zone, "template-%s" % template_id[:8],
                              _virtual_size(volume.template),
                              account, template_id=template_id)
        offering = offering or self.add_service_offering("small-%s" % name)
        vm = self.add_vm(name, account, host, template, offering, pool,
                         os.path.basename(volume.overlay),
                         _virtual_size(volume.overlay), networks, nics=nics,
                         project=project, tags=tags, details=details,
                         keypairs=keypairs, userdata=userdata,
                         securitygroups=securitygroups)
        if start:
            cloudstack_handlers.power_on(self, vm)
        return vm

    def _add(self, collection, item):
        with self.lock:
            collection.append(item)
            return item

    @staticmethod
    def _find(collection, object_id):
        return next((x for x in collection if x.id == object_id), None)

    # -- what the API shows ----------------------------------------------

    def vm_state(self, vm):
        """CloudStack's state of ``vm``; "Unmanaged" (not a CloudStack
        state: it lists the VM no more) once unmanageVirtualMachine ran."""
        with self.lock:
            if vm.unmanaged:
                return "Unmanaged"
            if vm.removed:
                return "Expunging"
            if vm.transition:
                return vm.transition
        return "Running" if self.kvm.is_running(vm.instancename) else (
            "Stopped")

    def root_volume(self, vm):
        return next(v for v in self.volumes if v.vm is vm and v.type == "ROOT")

    # -- what users do behind cs2os's back --------------------------------

    def user_start(self, vm, account=None, wait=True, timeout=60):
        """The VM's user (or ``account``) starts it as CloudStack's UI
        does: startVirtualMachine through the same handler and job queue as
        an API call.  Returns the model.Job, ended when ``wait``; a refused
        command raises cloudstack_handlers.ApiError."""
        account = account or vm.user or vm.account
        with self.lock:
            self.user_calls.append(("startVirtualMachine", vm.id,
                                    account.name))
        status, body = self._run_command(account, "startVirtualMachine",
                                         {"id": vm.id, "response": "json"})
        answer = body["startvirtualmachineresponse"]
        if status != 200:
            raise cloudstack_handlers.ApiError(answer["errorcode"],
                                               answer["errortext"])
        job = self.jobs[answer["jobid"]]
        if wait:
            cloudstack_handlers.wait_for_job(self, job, timeout)
        return job

    # -- failures on demand ----------------------------------------------

    def take_job_failure(self, command, vm):
        """The errortext a job of ``command`` on ``vm`` must fail with
        now, or None (used up as it is taken)."""
        with self.lock:
            entry = self.fail_jobs.get((command, vm.id))
            if entry is None:
                return None
            text, count = (entry, 1) if isinstance(entry, str) else entry
            _use_up(self.fail_jobs, (command, vm.id), (text,), count)
            self.injected.append(("job", (command, vm.id), text))
            return text

    def _take_call_failure(self, command):
        with self.lock:
            entry = self.fail_calls.get(command)
            if entry is None:
                return None
            status, text = entry[0], entry[1]
            count = entry[2] if len(entry) > 2 else 1
            _use_up(self.fail_calls, command, (status, text), count)
            self.injected.append(("call", command, "%s %s" % (status, text)))
            return status, text

    def _failed_call(self, command, failure):
        name = "%sresponse" % command.lower()
        status, text = failure
        if status == "timeout":
            # Unanswered until the client has given up (or we shut down).
            self._stopping.wait(float(text))
            return _error(name, 504, "the stand-in held %s for %s s "
                          "without running it" % (command, text))
        return _error(name, int(status), text)

    # -- WSGI ------------------------------------------------------------

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != API_PATH:
            start_response("404 Not Found", [("Content-Type", "text/html")])
            return [b"<html><body>HTTP Status 404 - Not Found</body></html>"]
        params = _params(environ)
        command = params.get("command")
        self.calls.append((environ["REQUEST_METHOD"], command, {
            k: v for k, v in params.items() if k.lower() not in _HIDDEN}))
        failure = self._take_call_failure(command)
        if failure is not None:
            status, body = self._failed_call(command, failure)
        else:
            status, body = self._answer(command, params)
        if params.get("response") != "json":
            # CloudStack would answer XML; cs2os never asks for it.
            status, body = 400, {"errorresponse": {
                "errorcode": 431,
                "errortext": "the stand-in answers response=json only"}}
        data = json.dumps(body).encode()
        start_response("%d %s" % (status, _reason(status)),
                       [("Content-Type", JSON_TYPE),
                        ("Content-Length", str(len(data)))])
        return [data]

    def _answer(self, command, params):
        handler = cloudstack_handlers.HANDLERS.get(command)
        # An unknown command fails verifyRequest like a bad signature does.
        caller = handler and signature.check(params, self._secret_for_key)
        if not caller:
            name = "%sresponse" % command.lower() if handler else None
            return _error(name or "errorresponse", 401,
                          "unable to verify user credentials and/or request "
                          "signature", cserrorcode=None)
        return self._run_command(caller, command, params)

    def _run_command(self, caller, command, params):
        """A verified caller's command: CloudStack's answer to it."""
        handler = cloudstack_handlers.HANDLERS[command]
        name = "%sresponse" % command.lower()
        if handler.admin_only and not caller.admin:
            # ApiServer.commandAvailable: a ServerApiException(UNAUTHORIZED)
            return _error(name, 401, "The given command '%s' either does not"
                          " exist, is not available for user." % command)
        try:
            return 200, {name: handler(self, caller, params)}
        except cloudstack_handlers.ApiError as exc:
            return _error(name, exc.code, exc.text)

    def _secret_for_key(self, apikey):
        for account in self.accounts:
            if account.apikey == apikey:
                return account, account.secretkey
        return None

    # -- serving ---------------------------------------------------------

    def serve(self):
        """Serve on 127.0.0.1:<free port>; return the endpoint URL."""
        self._server = simple_server.make_server(
            "127.0.0.1", 0, self, server_class=_ThreadingServer,
            handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="cloudstack-stand-in",
                                        daemon=True)
        self._thread.start()
        return "http://127.0.0.1:%d%s" % (self._server.server_port, API_PATH)

    def shutdown(self):
        self._stopping.set()  # releases held ("timeout") calls
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None
        cloudstack_handlers.wait_for_jobs(self)
        self.kvm.cleanup()


def _use_up(table, key, value, count):
    """One use of a failure entry: ``count`` None is forever."""
    if count is None:
        return
    if count <= 1:
        del table[key]
    else:
        table[key] = (*value, count - 1)


def _key():
    # CloudStack's keys are 86 url-safe base64 characters.
    return base64.urlsafe_b64encode(os.urandom(64)).decode().rstrip("=")


def _virtual_size(path):
    return qemu_img.info(path, "qcow2", force_share=True)["virtual-size"]


def _params(environ):
    pairs = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""),
                                   keep_blank_values=True)
    ctype = environ.get("CONTENT_TYPE", "")
    if environ["REQUEST_METHOD"] == "POST" and ctype.startswith(
            "application/x-www-form-urlencoded"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length).decode("utf-8")
        pairs += urllib.parse.parse_qsl(body, keep_blank_values=True)
    params = {}
    for key, value in pairs:  # the servlet keeps the first of repeats
        params.setdefault(key, value)
    return params


def _error(name, code, text, cserrorcode=9999):
    # ExceptionResponse; cserrorcode 9999 is ServerApiException's.
    body = {"uuidList": [], "errorcode": code}
    if cserrorcode is not None:
        body["cserrorcode"] = cserrorcode
    body["errortext"] = text
    return code, {name: body}


def _reason(status):
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class _ThreadingServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass  # the default prints every request line to stderr
