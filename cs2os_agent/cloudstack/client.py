"""A thin wrapper over the ``cs`` library for the calls cs2os makes.

``cs`` signs each request (HMAC-SHA1 with the secret key, signatureVersion
3 with an expiry) and unwraps CloudStack's ``{"<command>response": ...}``
envelope.  This module adds what a conductor needs on top: every failure
becomes one of the typed ``CloudStack*`` exceptions, asynchronous commands
are waited for, and lookups say "not found" in one way whatever CloudStack
answered.

Requests go out as POST: the signature then travels in the body, not in a
URL that proxies and access logs keep, and servers with
``enforce.post.requests.and.timestamps`` accept them.  Nothing here logs the
secret key or a signature; command names and object ids are logged.
"""

import re
import threading
import time

import cs
import requests
from oslo_log import log as logging

from cs2os_agent.cloudstack import errors

LOG = logging.getLogger(__name__)

# CloudStack accepts only lowercase UUIDs as uuids
# (ParamProcessWorker.translateUuidToInternalId).
UUID_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)

# org.apache.cloudstack.api.ApiErrorCode
# projectid=-1: the resources of every CloudStack project.
ALL_PROJECTS = -1
UNAUTHORIZED = 401
PARAM_ERROR = 431

# JobInfo.Status: IN_PROGRESS, SUCCEEDED, FAILED, CANCELLED
JOB_PENDING = 0
JOB_SUCCEEDED = 1

# A VM name is a host name (UserVmManagerImpl refuses others).  Checking it
# first also keeps "~" out of requests: cs leaves it unencoded when signing,
# CloudStack's URLEncoder does not, and the request would be refused.
_VM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")

# CloudStack answers an id that names nothing with 431 and this text (from
# ParamProcessWorker), not with an empty list.
_UNKNOWN_ID = re.compile(r"Invalid parameter (\w+) value=")

# The request parameters worth a log line; never apiKey or signature.
_LOGGED_PARAMS = ("id", "name", "jobid", "virtualmachineid", "type",
                  "templatefilter", "forced", "expunge")
_URL_QUERY = re.compile(r"\?[^\s'\")]*")


def _redact(text):
    """Drop URL query strings: with GET they would carry the signature."""
    return _URL_QUERY.sub("?<redacted>", text)


def _unknown_id(exc, param):
    match = _UNKNOWN_ID.search(str(exc.kwargs.get("errortext", "")))
    return (exc.kwargs.get("errorcode") == PARAM_ERROR
            and match is not None and match.group(1) == param)


class CloudStackClient:
    """The CloudStack calls of a migration, with typed errors."""

    def __init__(self, endpoint, api_key, secret_key, timeout=30,
                 verify=True, ca_file=None, job_poll_interval=2.0,
                 job_timeout=1800, session=None):
        for option, value in (("endpoint", endpoint), ("api_key", api_key),
                              ("secret_key", secret_key)):
            if not value:
                raise errors.CloudStackNotConfigured(option=option)
        self.endpoint = endpoint
        self.timeout = timeout
        self.job_poll_interval = job_poll_interval
        self.job_timeout = job_timeout
        self._key = api_key
        self._secret = secret_key
        # cs turns verify=False into True; only this flag disables checks.
        if ca_file:
            self._tls = {"verify": ca_file}
        else:
            self._tls = {"dangerous_no_tls_verify": not verify}
        self._session = session
        # A requests.Session is not meant to be shared between threads, and
        # a conductor runs migrations in several.
        self._local = threading.local()

    @classmethod
    def from_conf(cls, conf, session=None):
        c = conf.cloudstack
        return cls(c.endpoint, c.api_key, c.secret_key, timeout=c.timeout,
                   verify=c.verify, ca_file=c.ca_file,
                   job_poll_interval=c.job_poll_interval,
                   job_timeout=c.job_timeout, session=session)

    def __repr__(self):
        return "<CloudStackClient %s>" % self.endpoint

    def _api(self):
        api = getattr(self._local, "api", None)
        if api is None:
            api = cs.CloudStack(
                endpoint=self.endpoint, key=self._key, secret=self._secret,
                timeout=self.timeout, method="post", retry=0,
                session=self._session, **self._tls)
            self._local.api = api
        return api

    def call(self, command, fetch_list=False, **params):
        """One signed API call; the unwrapped answer (a list if fetch_list).

        Every failure is a CloudStackError subclass.
        """
        LOG.debug("CloudStack %s %s", command,
                  {k: params[k] for k in _LOGGED_PARAMS if k in params})
        try:
            return getattr(self._api(), command)(fetch_list=fetch_list,
                                                 **params)
        except requests.exceptions.SSLError as exc:
            raise errors.CloudStackError(
                command=command,
                reason="TLS with %s failed (check [cloudstack] ca_file and "
                "verify): %s" % (self.endpoint, _redact(str(exc)))) from None
        except (requests.exceptions.ConnectionError,
                requests.exceptions.Timeout) as exc:
            raise errors.CloudStackUnreachable(
                endpoint=self.endpoint, command=command,
                reason=_redact(str(exc))) from None
        except cs.CloudStackApiException as exc:
            raise self._api_error(command, exc) from None
        except cs.CloudStackException as exc:
            # Not a CloudStack answer at all: an HTML error page, a proxy.
            raise errors.CloudStackError(
                command=command,
                reason=_redact(" ".join(str(a) for a in exc.args))) from None
        except requests.exceptions.RequestException as exc:
            raise errors.CloudStackError(
                command=command, reason=_redact(str(exc))) from None

    @staticmethod
    def _api_error(command, exc):
        error = exc.error if isinstance(exc.error, dict) else {}
        code = error.get("errorcode")
        if code is None and exc.response is not None:
            code = exc.response.status_code
        text = error.get("errortext") or _redact(str(exc.error))
        if code == UNAUTHORIZED:
            return errors.CloudStackAuthFailed(
                command=command, errorcode=code, errortext=text)
        return errors.CloudStackAPIError(
            command=command, errorcode=code, errortext=text)

    def _list(self, command, key, **params):
        answer = self.call(command, **params)
        if isinstance(answer, list):  # fetch_list already unwrapped it
            return answer
        # CloudStack sends {} for an empty list, without count or key.
        return answer.get(key, [])

    def _one(self, command, key, kind, object_id, **params):
        try:
            found = self._list(command, key, id=object_id, **params)
        except errors.CloudStackAPIError as exc:
            if _unknown_id(exc, "id"):
                raise errors.CloudStackObjectNotFound(
                    kind=kind, id=object_id) from None
            raise
        if not found:
            raise errors.CloudStackObjectNotFound(kind=kind, id=object_id)
        return found[0]

    # -- lookups ---------------------------------------------------------

    def find_vm(self, ref):
        """The listVirtualMachines entry of the VM with id or name *ref*.

        A name must match exactly (CloudStack's ``name`` filter matches
        substrings) and name one VM across all accounts.
        """
        if UUID_RE.match(ref.lower()):
            try:
                found = self._list("listVirtualMachines", "virtualmachine",
                                   id=ref.lower(), listall=True)
            except errors.CloudStackAPIError as exc:
                if not _unknown_id(exc, "id"):
                    raise
                found = []
            if found:
                return found[0]
            # A host name may look like a uuid: try it as a name too.
        if not _VM_NAME_RE.match(ref):
            raise errors.CloudStackVMNotFound(ref=ref)
        # listall: without it even a root admin sees only its own VMs.
        # Without a projectid CloudStack skips the VMs CloudStack projects
        # own, and projectid=-1 lists those only (AccountManagerImpl.
        # buildACLSearchParameters): a name is looked up both ways.
        listed = {}
        for scope in ({}, {"projectid": ALL_PROJECTS}):
            for vm in self._list("listVirtualMachines", "virtualmachine",
                                 fetch_list=True, name=ref, listall=True,
                                 **scope):
                listed.setdefault(vm.get("id"), vm)
        matches = [vm for vm in listed.values() if vm.get("name") == ref]
        if not matches:
            raise errors.CloudStackVMNotFound(ref=ref)
        if len(matches) > 1:
            raise errors.CloudStackVMAmbiguous(
                ref=ref, count=len(matches),
                ids=", ".join(sorted(vm["id"] for vm in matches)))
        return matches[0]

    def select_vms(self, selector):
        """The VMs (listVirtualMachines entries, by name) a plan's
        ``selector`` names; every key given must match: ``account`` (with
        ``domain``), ``domain``, ``project``, ``zone``, ``host`` (the KVM
        host; running VMs only), each an id or a name; ``tag``
        ("key=value"); ``pool`` (primary storage id or name: the VMs whose
        ROOT volume is on it, through listVolumes).  Matched here rather
        than by CloudStack's list filters, which differ between releases
        (account needs domainid, tags need indexed keys)."""
        listed = {}
        for scope in ({}, {"projectid": ALL_PROJECTS}):
            for vm in self._list("listVirtualMachines", "virtualmachine",
                                 fetch_list=True, listall=True, **scope):
                listed.setdefault(vm.get("id"), vm)
        fields = {"account": ("account",), "domain": ("domainid", "domain"),
                  "project": ("projectid", "project"),
                  "zone": ("zoneid", "zonename"),
                  "host": ("hostid", "hostname")}
        chosen = list(listed.values())
        for key, names in fields.items():
            if selector.get(key):
                chosen = [vm for vm in chosen if selector[key] in
                          [vm.get(n) for n in names]]
        if selector.get("tag"):
            tag_key, _, tag_value = selector["tag"].partition("=")
            chosen = [vm for vm in chosen if any(
                t.get("key") == tag_key and t.get("value") == tag_value
                for t in vm.get("tags") or [])]
        if selector.get("pool"):
            on_pool = set()
            for scope in ({}, {"projectid": ALL_PROJECTS}):
                for vol in self._list("listVolumes", "volume",
                                      fetch_list=True, type="ROOT",
                                      listall=True, **scope):
                    if selector["pool"] in (vol.get("storageid"),
                                            vol.get("storage")):
                        on_pool.add(vol.get("virtualmachineid"))
            chosen = [vm for vm in chosen if vm.get("id") in on_pool]
        return sorted(chosen, key=lambda vm: (vm.get("name") or "",
                                              vm.get("id")))

    def list_volumes(self, vm_id, project_id=None):
        """The VM's volumes, ROOT first, then by device id.  ``project_id``:
        the CloudStack project that owns the VM (CloudStack lists a
        project's volumes only when asked for its projectid)."""
        scope = {"projectid": project_id} if project_id else {}
        try:
            volumes = self._list("listVolumes", "volume", fetch_list=True,
                                 virtualmachineid=vm_id, listall=True,
                                 **scope)
        except errors.CloudStackAPIError as exc:
            if _unknown_id(exc, "virtualmachineid"):
                raise errors.CloudStackVMNotFound(ref=vm_id) from None
            raise
        return sorted(volumes, key=lambda v: (v.get("type") != "ROOT",
                                              v.get("deviceid", 0)))

    def get_user_data(self, vm_id):
        """The VM's user data, base64 as CloudStack keeps it, or None.

        Never logged and never recorded: user data often holds passwords
        (cloud-config ``chpasswd``, tokens); it goes to Nova only.
        """
        answer = self.call("getVirtualMachineUserData",
                           virtualmachineid=vm_id)
        return (answer.get("virtualmachineuserdata") or {}).get(
            "userdata") or None

    def list_security_groups(self, ids, project_id=None):
        """The listSecurityGroups entries (with their rules) of the groups
        ``ids``, in that order.  listVirtualMachines names a VM's groups
        without rules.  ``project_id``: the CloudStack project that owns
        the VM (and so its groups)."""
        scope = {"projectid": project_id} if project_id else {}
        return [self._one("listSecurityGroups", "securitygroup",
                          "security group", group_id, listall=True, **scope)
                for group_id in ids]

    def find_security_groups(self, name):
        """Every group named ``name`` a root admin sees: accounts' and
        CloudStack projects' (a rule names the group it allows by name and
        account only, SecurityGroupRuleResponse)."""
        listed = {}
        for scope in ({}, {"projectid": ALL_PROJECTS}):
            for group in self._list("listSecurityGroups", "securitygroup",
                                    fetch_list=True, securitygroupname=name,
                                    listall=True, **scope):
                listed.setdefault(group.get("id"), group)
        return [g for g in listed.values() if g.get("name") == name]

    def get_storage_pool(self, pool_id):
        return self._one("listStoragePools", "storagepool", "storage pool",
                         pool_id)

    def get_template(self, template_id):
        # templatefilter is mandatory; "all" (root admin) finds any owner's.
        # A template in several zones is listed once per zone.
        return self._one("listTemplates", "template", "template",
                         template_id, templatefilter="all")

    def get_service_offering(self, offering_id):
        return self._one("listServiceOfferings", "serviceoffering",
                         "service offering", offering_id)

    def get_host(self, host_id):
        return self._one("listHosts", "host", "host", host_id)

    def set_vm_ha(self, vm_id, enabled):
        """updateVirtualMachine haenable= (synchronous): with HA on,
        CloudStack would start the VM again once its domain leaves the
        host (a live migration's hop); its new entry."""
        answer = self.call("updateVirtualMachine", id=vm_id,
                           haenable="true" if enabled else "false")
        return answer.get("virtualmachine", answer)

    # -- asynchronous VM actions -----------------------------------------

    def stop_vm(self, vm_id, forced=False):
        """Stop the VM (clean guest shutdown unless forced); its new entry.

        Waits for the job. CloudStack stops the domain, which vanishes from
        libvirt (it is transient); the volume files stay.
        """
        extra = {"forced": True} if forced else {}
        return self._vm_job("stopVirtualMachine", vm_id, **extra)

    def start_vm(self, vm_id):
        return self._vm_job("startVirtualMachine", vm_id)

    def destroy_vm(self, vm_id, expunge=False):
        """Destroy the VM; with expunge CloudStack also deletes its volumes.
        """
        extra = {"expunge": True} if expunge else {}
        return self._vm_job("destroyVirtualMachine", vm_id, **extra)

    def unmanage_vm(self, vm_id):
        """Make CloudStack forget the VM (unmanageVirtualMachine, KVM since
        CloudStack 4.19) so nobody can start it from CloudStack again; its
        volume files stay on primary storage."""
        return self._vm_job("unmanageVirtualMachine", vm_id)

    def stop_vm_async(self, vm_id):
        """Ask CloudStack to stop the VM cleanly; its job id, not waited
        for (``wait_for_job`` or ``poll_job`` later)."""
        return self._submit_vm_job("stopVirtualMachine", vm_id)

    def _vm_job(self, command, vm_id, **params):
        job_id = self._submit_vm_job(command, vm_id, **params)
        result = self.wait_for_job(job_id, command, vm_id)
        return result.get("virtualmachine", result)

    def _submit_vm_job(self, command, vm_id, **params):
        try:
            answer = self.call(command, id=vm_id, **params)
        except errors.CloudStackAPIError as exc:
            if _unknown_id(exc, "id"):
                raise errors.CloudStackVMNotFound(ref=vm_id) from None
            raise
        job_id = answer.get("jobid") if isinstance(answer, dict) else None
        if not job_id:
            raise errors.CloudStackError(
                command=command, reason="the answer names no job: %s"
                % _redact(str(answer)))
        LOG.info("CloudStack %s %s: job %s", command, vm_id, job_id)
        return job_id

    def poll_job(self, job_id, command="job", target=""):
        """One queryAsyncJobResult: the job's ``jobresult`` once it
        succeeded, None while it runs; CloudStackJobFailed if it failed."""
        job = self.call("queryAsyncJobResult", jobid=job_id)
        status = job.get("jobstatus")
        if status == JOB_SUCCEEDED:
            LOG.info("CloudStack job %s (%s %s) succeeded", job_id,
                     command, target)
            return job.get("jobresult") or {}
        if status != JOB_PENDING:
            result = job.get("jobresult") or {}
            raise errors.CloudStackJobFailed(
                job_id=job_id, command=command, target=target,
                errorcode=result.get("errorcode", job.get("jobresultcode")),
                errortext=result.get("errortext", "(no error text)"))
        return None

    def wait_for_job(self, job_id, command="job", target=""):
        """Poll queryAsyncJobResult until the job ends; its ``jobresult``.

        A restarted conductor can call this again with a job id it saved.
        """
        deadline = time.monotonic() + self.job_timeout
        while True:
            try:
                result = self.poll_job(job_id, command, target)
            except errors.CloudStackUnreachable as exc:
                # The job runs on in CloudStack: a management server restart
                # or a network blip must not fail the migration.
                LOG.warning("Still waiting for CloudStack job %s: %s",
                            job_id, exc)
            else:
                if result is not None:
                    return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.CloudStackJobTimeout(
                    job_id=job_id, command=command, target=target,
                    timeout=self.job_timeout)
            time.sleep(min(self.job_poll_interval, remaining))
