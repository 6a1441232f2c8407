"""The commands the CloudStack stand-in answers, and its async jobs.

Parameter handling follows ParamProcessWorker: a missing required
parameter or an id that names nothing is error 431 with CloudStack's own
wording; an id of an expunged object is found ("including removed") and
gives an empty list.  List answers follow ApiResponseSerializer: an empty
list is ``{}``, without ``count``.  Who sees what follows
AccountManagerImpl.buildACLSearchParameters (``_scope``): lists show only
the caller's own objects unless a root admin passes ``listall=true`` or an
``id``; the objects of CloudStack projects only with a ``projectid``.
"""

import threading
import time

from tools.testbed import cloudstack_kvm
from tools.testbed import cloudstack_model as model

PAGE_SIZE = 500  # default.page.size
TEMPLATE_FILTERS = ("featured", "self", "selfexecutable", "sharedexecutable",
                    "executable", "community", "all")
JOB_CLASSES = {
    "stopVirtualMachine": "StopVMCmd",
    "startVirtualMachine": "StartVMCmd",
    "destroyVirtualMachine": "DestroyVMCmd",
    "unmanageVirtualMachine": "UnmanageVMInstanceCmd",
}

HANDLERS = {}


class ApiError(Exception):
    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


def command(name, admin_only=False, required=()):
    def register(fn):
        def handler(cloud, caller, params):
            # Parameter names are case insensitive; CloudStack's are
            # lowercase.
            lowered = {k.lower(): v for k, v in params.items()}
            for param in required:
                if param not in lowered:
                    raise ApiError(431, "Unable to execute API command %s due"
                                   " to missing parameter %s"
                                   % (name.lower(), param))
            return fn(cloud, caller, lowered, name)
        handler.admin_only = admin_only
        HANDLERS[name] = handler
        return fn
    return register


def _invalid_id(name, param, value):
    return ApiError(431, "Unable to execute API command %s due to invalid "
                    "value. Invalid parameter %s value=%s due to incorrect "
                    "long value format, or entity does not exist or due to "
                    "incorrect parameter annotation for the field in api cmd "
                    "class." % (name.lower(), param, value))


def _lookup(cloud, collection, name, param, value):
    with cloud.lock:
        found = next((x for x in collection if x.id == value), None)
        if found is None and value.isdigit():  # pre-3.x ids are numbers too
            found = next((x for x in collection
                          if getattr(x, "internal_id", None) == int(value)),
                         None)
    if found is None:
        raise _invalid_id(name, param, value)
    return found


def _true(params, key):
    return params.get(key, "").lower() == "true"  # Boolean.valueOf


def _list(key, items, params, name):
    try:
        page = int(params.get("page", 1))
        size = int(params.get("pagesize", PAGE_SIZE))
    except ValueError:
        raise ApiError(431, "Unable to execute API command %s due to invalid "
                       "value for page or pagesize" % name.lower()) from None
    shown = items[(page - 1) * size:page * size]
    if not items:
        return {}
    answer = {"count": len(items)}
    if shown:
        answer[key] = shown
    return answer


def _scope(cloud, caller, params, name):
    """Which owners' objects a list shows: a test on model.Account, as
    AccountManagerImpl.buildACLSearchParameters decides it (read on main,
    where it moved to AclSearchBuilderServiceImpl, and in 4.x releases).

    Without ``projectid`` the projects' objects are skipped
    (ListProjectResourcesCriteria.SkipProjectResources), but only when no
    ``id`` is given: ``if (id == null) domainIdRecursiveListProject.third(
    SkipProjectResources)``, and QueryManagerImpl.searchForUserVMIdsAndCount
    passes listVirtualMachines' id.  So listVirtualMachines id=<a project's
    VM> without projectid does find it for a root admin (with an id it gets
    no account restriction either), and not for a normal user
    (permittedAccounts is the caller).  listVolumes virtualmachineid=... is
    no id: without projectid a project VM's volumes are not listed.

    ``projectid=-1``: every project's objects only (ListProjectResources
    Only); with ``listall=true`` a root admin gets every object, projects'
    and others' (as since 4.18; ListAllIncludingProjectResources on main),
    a normal user its projects' and its own.  A ``projectid`` of a project
    the caller is no member of is PermissionDeniedException (531).
    """
    listall = _true(params, "listall")
    if "projectid" not in params:
        def own(owner):
            return owner is caller or (caller.admin and (
                listall or "id" in params))
        return lambda owner: own(owner) and (
            "id" in params or owner.project is None)
    if params["projectid"] == "-1":
        if caller.admin:
            return lambda owner: listall or owner.project is not None
        return lambda owner: (listall and owner is caller) or (
            owner.project is not None and owner.project.owner is caller)
    project = _lookup(cloud, cloud.projects, name, "projectid",
                      params["projectid"])
    if not (caller.admin or project.owner is caller):
        raise ApiError(531, "Account %s can't access project id=%s"
                       % (caller.name, project.internal_id))
    return lambda owner: owner is project.account


def _disk(volume):
    """The volume file as the KVM host names it (LibvirtStorageAdaptor)."""
    if volume.pool.type == "NetworkFilesystem":
        return "/mnt/%s/%s" % (volume.pool.id, volume.path)
    return "%s/%s" % (volume.pool.path.rstrip("/"), volume.path)


# -- lists ---------------------------------------------------------------


@command("listVirtualMachines")
def list_vms(cloud, caller, params, name):
    vms = list(cloud.vms)
    if "id" in params:
        vms = [_lookup(cloud, vms, name, "id", params["id"])]
    wanted = params.get("name", "").lower()
    # With an id a root admin finds a project's VM without projectid too,
    # as CloudStack does (_scope: AccountManagerImpl).
    visible = _scope(cloud, caller, params, name)
    shown = []
    for vm in vms:
        if vm.removed or not visible(vm.account):
            continue
        if wanted and wanted not in vm.name.lower():  # SQL LIKE %name%
            continue
        state = cloud.vm_state(vm)
        # Guess: destroyed VMs are listed to admins only unless asked for.
        if "state" in params:
            if params["state"] == "Present":
                if state in ("Destroyed", "Expunging"):
                    continue
            elif params["state"].lower() != state.lower():
                continue
        elif state == "Destroyed" and not caller.admin:
            continue
        shown.append(model.render_vm(vm, state, caller.admin,
                                     _true(params, "userdata")))
    return _list("virtualmachine", shown, params, name)


@command("listVolumes")
def list_volumes(cloud, caller, params, name):
    volumes = list(cloud.volumes)
    if "id" in params:
        volumes = [_lookup(cloud, volumes, name, "id", params["id"])]
    if "virtualmachineid" in params:
        vm = _lookup(cloud, cloud.vms, name, "virtualmachineid",
                     params["virtualmachineid"])
        volumes = [v for v in volumes if v.vm is vm]
    visible = _scope(cloud, caller, params, name)
    shown = [
        model.render_volume(v, cloud.vm_state(v.vm), caller.admin)
        for v in volumes
        if not v.removed and visible(v.vm.account)
        and params.get("type", v.type).upper() == v.type
    ]
    return _list("volume", shown, params, name)


@command("listStoragePools", admin_only=True)
def list_pools(cloud, caller, params, name):
    pools = list(cloud.pools)
    if "id" in params:
        pools = [_lookup(cloud, pools, name, "id", params["id"])]
    return _list("storagepool", [model.render_pool(p) for p in pools],
                 params, name)


@command("listTemplates", required=("templatefilter",))
def list_templates(cloud, caller, params, name):
    which = params["templatefilter"]
    if which not in TEMPLATE_FILTERS:
        raise ApiError(431, "Unable to execute API command listtemplates due "
                       "to invalid value %s for parameter templatefilter"
                       % which)
    templates = list(cloud.templates)
    if "id" in params:
        templates = [_lookup(cloud, templates, name, "id", params["id"])]
    if not (which == "all" and caller.admin):
        templates = [t for t in templates
                     if t.owner is caller or (t.ispublic
                                              and which != "self")]
    return _list("template", [model.render_template(t) for t in templates],
                 params, name)


@command("listServiceOfferings")
def list_offerings(cloud, caller, params, name):
    offerings = list(cloud.offerings)
    if "id" in params:
        offerings = [_lookup(cloud, offerings, name, "id", params["id"])]
    return _list("serviceoffering",
                 [model.render_offering(o) for o in offerings], params, name)


@command("listHosts", admin_only=True)
def list_hosts(cloud, caller, params, name):
    hosts = list(cloud.hosts)
    if "id" in params:
        hosts = [_lookup(cloud, hosts, name, "id", params["id"])]
    return _list("host", [model.render_host(h) for h in hosts], params, name)


@command("updateVirtualMachine", required=("id",))
def update_vm(cloud, caller, params, name):
    """UpdateVMCmd (synchronous); of its parameters only haenable (what
    a live migration turns off while the guest leaves the host)."""
    vm = _own_vm(cloud, caller, params, name)
    if "haenable" in params:
        with cloud.lock:
            vm.haenable = _true(params, "haenable")
    return {"virtualmachine": model.render_vm(vm, cloud.vm_state(vm),
                                              caller.admin)}


# -- asynchronous VM commands --------------------------------------------


@command("stopVirtualMachine", required=("id",))
def stop_vm(cloud, caller, params, name):
    vm = _own_vm(cloud, caller, params, name)
    forced = _true(params, "forced")
    return _submit(cloud, caller, name, vm,
                   lambda: power_off(cloud, vm, forced))


@command("startVirtualMachine", required=("id",))
def start_vm(cloud, caller, params, name):
    vm = _own_vm(cloud, caller, params, name)
    return _submit(cloud, caller, name, vm, lambda: power_on(cloud, vm))


@command("destroyVirtualMachine", required=("id",))
def destroy_vm(cloud, caller, params, name):
    vm = _own_vm(cloud, caller, params, name)
    expunge = _true(params, "expunge")
    return _submit(cloud, caller, name, vm,
                   lambda: destroy(cloud, vm, expunge))


@command("unmanageVirtualMachine", admin_only=True, required=("id",))
def unmanage_vm(cloud, caller, params, name):
    vm = _own_vm(cloud, caller, params, name)
    return _submit(cloud, caller, name, vm, lambda: unmanage(cloud, vm))


@command("queryAsyncJobResult", required=("jobid",))
def query_job(cloud, caller, params, name):
    job = cloud.jobs.get(params["jobid"])
    if job is None or not (caller.admin or job.account is caller):
        raise _invalid_id(name, "jobid", params["jobid"])
    with cloud.lock:
        return model.render_job(job)


def _own_vm(cloud, caller, params, name):
    vm = _lookup(cloud, cloud.vms, name, "id", params["id"])
    project = vm.account.project
    if not (caller.admin or vm.account is caller
            or (project is not None and project.owner is caller)):
        raise ApiError(531, "Account %s does not have permission to operate "
                       "on VM %s" % (caller.name, vm.id))
    return vm


def _submit(cloud, caller, name, vm, action):
    failure = cloud.take_job_failure(name, vm)
    if failure is not None:
        # As when the KVM agent answers the command with an error: the job
        # fails with INTERNAL_ERROR (530) and the VM stays as it was.
        def action():
            raise ApiError(530, failure)
    package = "admin" if caller.admin else "user"
    suffix = "ByAdmin" if caller.admin else ""
    job = model.Job("org.apache.cloudstack.api.command.%s.vm.%s%s"
                    % (package, JOB_CLASSES[name], suffix), vm, caller)
    thread = threading.Thread(target=_run, args=(cloud, job, action),
                              name="cloudstack-job-%s" % job.id[:8],
                              daemon=True)
    with cloud.lock:
        cloud.jobs[job.id] = job
        cloud.job_threads.append(thread)
    thread.start()
    return {"jobid": job.id}


def _run(cloud, job, action):
    # CloudStack queues the work on one VM (VmWorkJobQueue): one at a time.
    with cloud.lock:
        vm_lock = cloud.vm_locks.setdefault(job.vm.id, threading.Lock())
    with vm_lock:
        try:
            action()
            status, code = 1, 0
            result = {"virtualmachine": model.render_vm(
                job.vm, cloud.vm_state(job.vm), job.account.admin)}
        except ApiError as exc:
            status, code = 2, exc.code
            result = {"errorcode": exc.code, "errortext": exc.text}
        except Exception as exc:  # what CloudStack reports as 530
            status, code = 2, 530
            result = {"errorcode": 530, "errortext": str(exc)}
    with cloud.lock:
        job.status, job.resultcode, job.result = status, code, result
        job.completed = model.timestamp()


def wait_for_jobs(cloud):
    for thread in list(cloud.job_threads):
        thread.join()


def wait_for_job(cloud, job, timeout=60):
    """Until ``job`` has ended (jobstatus 1 or 2); AssertionError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with cloud.lock:
            if job.status != 0:
                return job
        if time.monotonic() > deadline:
            raise AssertionError("CloudStack job %s (%s) still pending "
                                 "after %s s" % (job.id, job.cmd, timeout))
        time.sleep(0.01)


# -- what the KVM agent does -----------------------------------------------


def power_on(cloud, vm):
    with cloud.lock:
        if vm.removed or vm.transition in ("Destroyed", "Expunging"):
            raise ApiError(431, "Unable to start VM %s: it is %s"
                           % (vm.id, cloud.vm_state(vm)))
    if cloud.kvm.is_running(vm.instancename):
        return  # Guess: a running VM "starts" without error.
    host = vm.last_host
    with cloud.lock:
        vm.transition, vm.host = "Starting", host
    root = cloud.root_volume(vm)
    spec = cloudstack_kvm.DomainSpec(
        name=vm.instancename, uuid=vm.id, memory_mib=vm.offering.memory,
        vcpus=vm.offering.cpunumber, disk=_disk(root),
        serial=root.id.replace("-", "")[:20])
    try:
        cloud.kvm.start(spec)
    except cloudstack_kvm.PowerError as exc:
        with cloud.lock:
            vm.transition, vm.host = None, None
        # Guessed wording; the code is INTERNAL_ERROR.
        raise ApiError(530, "Unable to start VM instance %s on host %s: %s"
                       % (vm.id, host.name, exc)) from exc
    with cloud.lock:
        vm.transition, vm.last_host = None, host


def power_off(cloud, vm, forced):
    if cloud.kvm.is_running(vm.instancename):
        with cloud.lock:
            vm.transition = "Stopping"
        try:
            cloud.kvm.stop(vm.instancename, forced)
        except cloudstack_kvm.PowerError as exc:
            raise ApiError(530, "Failed to stop VM instance %s: %s"
                           % (vm.id, exc)) from exc
        finally:
            with cloud.lock:
                vm.transition = None
    with cloud.lock:
        vm.host = None


def destroy(cloud, vm, expunge):
    power_off(cloud, vm, forced=False)
    with cloud.lock:
        vm.transition = "Destroyed"
    if expunge:
        # Expunging deletes the VM's volumes from primary storage.
        with cloud.lock:
            vm.transition = "Expunging"
            volumes = [v for v in cloud.volumes if v.vm is vm]
        for volume in volumes:
            cloud.kvm.delete_volume(_disk(volume))
            volume.removed = True
        with cloud.lock:
            vm.removed = True


def unmanage(cloud, vm):
    """CloudStack forgets the VM and its volumes (KVM since 4.19); the
    volume files stay on primary storage, a running domain runs on."""
    with cloud.lock:
        if vm.removed or vm.transition in ("Destroyed", "Expunging"):
            raise ApiError(431, "Unable to unmanage VM %s: it is %s"
                           % (vm.id, cloud.vm_state(vm)))
        for volume in cloud.volumes:
            if volume.vm is vm:
                volume.removed = True
        vm.removed = True
        vm.unmanaged = True
