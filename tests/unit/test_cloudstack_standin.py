"""The stand-in's wire format, byte for byte where CloudStack's is known.

Requests are signed here by hand (not by cs) and sent to the WSGI app in
this process.
"""

import datetime
import io
import json
import time
import urllib.parse
import uuid

import pytest

from cs2os_agent.cloudstack import client as cloudstack_client
from cs2os_agent.cloudstack import errors as cloudstack_errors
from tools.testbed import cloudstack_api
from tools.testbed import cloudstack_handlers
from tools.testbed import cloudstack_signature as signature


@pytest.fixture
def cloud():
    api = cloudstack_api.FakeCloudStack()
    api.admin = api.add_account("admin")
    zone = api.add_zone("zone-1")
    api.host = api.add_host(zone, "kvm-1")
    pool = api.add_storage_pool(zone, "nfs-1")
    template = api.add_template(zone, "tiny", 1 << 26, api.admin)
    api.vm = api.add_vm("web-1", api.admin, api.host, template,
                        api.add_service_offering("small"), pool, "file-1",
                        1 << 26)
    yield api
    api.shutdown()


def call(app, params, secret=None, method="GET", path="/client/api"):
    params = dict(params)
    if secret is not None:
        params["signature"] = signature.sign(params, secret)
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    body = query.encode() if method == "POST" else b""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path,
        "QUERY_STRING": "" if method == "POST" else query,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
    }
    started = {}

    def start_response(status, headers):
        started.update(status=status, headers=dict(headers))

    data = b"".join(app(environ, start_response))
    assert started["headers"]["Content-Type"].startswith("application/json")
    return int(started["status"].split()[0]), json.loads(data)


def signed(cloud, command, **params):
    params.update(command=command, response="json",
                  apiKey=cloud.admin.apikey)
    return call(cloud, params, cloud.admin.secretkey)


def test_list_envelope(cloud):
    status, body = signed(cloud, "listVirtualMachines", id=cloud.vm.id)
    assert status == 200
    answer = body["listvirtualmachinesresponse"]
    assert answer["count"] == 1
    (vm,) = answer["virtualmachine"]
    assert vm["id"] == cloud.vm.id and vm["state"] == "Stopped"
    assert vm["instancename"].startswith("i-2-")
    assert vm["instancename"].endswith("-VM")


def test_empty_list_is_an_empty_object(cloud):
    status, body = signed(cloud, "listVirtualMachines", name="nothing")
    assert (status, body) == (200, {"listvirtualmachinesresponse": {}})


def test_bad_signature_is_cloudstacks_401(cloud):
    params = {"command": "listVirtualMachines", "response": "json",
              "apiKey": cloud.admin.apikey}
    expected = {"listvirtualmachinesresponse": {
        "uuidList": [], "errorcode": 401,
        "errortext": "unable to verify user credentials and/or request "
                     "signature"}}
    assert call(cloud, params, "wrong") == (401, expected)
    assert call(cloud, params) == (401, expected)  # no signature
    # POST works the same as GET.
    assert call(cloud, params, cloud.admin.secretkey, method="POST")[0] == 200


def test_expired_request_is_refused(cloud):
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        minutes=1)
    params = {"command": "listHosts", "response": "json",
              "apiKey": cloud.admin.apikey, "signatureVersion": "3",
              "expires": past.strftime("%Y-%m-%dT%H:%M:%S%z")}
    assert call(cloud, params, cloud.admin.secretkey)[0] == 401


def test_unknown_command_fails_verification(cloud):
    status, body = signed(cloud, "deployVirtualMachine")
    assert status == 401
    assert body["errorresponse"]["errorcode"] == 401


def test_unknown_id_is_431_with_cloudstacks_text(cloud):
    missing = str(uuid.uuid4())
    status, body = signed(cloud, "listVirtualMachines", id=missing)
    assert status == 431
    assert body == {"listvirtualmachinesresponse": {
        "uuidList": [], "errorcode": 431, "cserrorcode": 9999,
        "errortext": "Unable to execute API command listvirtualmachines due "
                     "to invalid value. Invalid parameter id value=%s due to "
                     "incorrect long value format, or entity does not exist "
                     "or due to incorrect parameter annotation for the field "
                     "in api cmd class." % missing}}


def test_missing_parameter(cloud):
    status, body = signed(cloud, "listTemplates")
    assert status == 431
    assert body["listtemplatesresponse"]["errortext"] == (
        "Unable to execute API command listtemplates due to missing "
        "parameter templatefilter")


def test_admin_only_command_for_a_user(cloud):
    user = cloud.add_account("bob", admin=False)
    params = {"command": "listHosts", "response": "json",
              "apiKey": user.apikey}
    status, body = call(cloud, params, user.secretkey)
    assert status == 401
    assert "listHosts' either does not exist" in (
        body["listhostsresponse"]["errortext"])


def test_user_view_hides_admin_fields(cloud):
    user = cloud.add_account("bob", admin=False)
    vm = cloud.add_vm("mine", user, cloud.host, cloud.vm.template,
                      cloud.vm.offering, cloud.root_volume(cloud.vm).pool,
                      "file-2", 1 << 26)
    params = {"command": "listVolumes", "response": "json",
              "apiKey": user.apikey, "virtualmachineid": vm.id}
    (volume,) = call(cloud, params, user.secretkey)[1][
        "listvolumesresponse"]["volume"]
    assert "path" not in volume and "storageid" not in volume
    status, body = signed(cloud, "listVolumes", virtualmachineid=vm.id)
    assert body == {"listvolumesresponse": {}}  # not the admin's own VM
    status, body = signed(cloud, "listVolumes", virtualmachineid=vm.id,
                          listall="true")
    assert body["listvolumesresponse"]["volume"][0]["path"] == "file-2"


def test_async_job_shapes(cloud):
    status, body = signed(cloud, "startVirtualMachine", id=cloud.vm.id)
    assert status == 200
    (job_id,) = body["startvirtualmachineresponse"].values()
    deadline = time.monotonic() + 10
    while True:
        job = signed(cloud, "queryAsyncJobResult", jobid=job_id)[1][
            "queryasyncjobresultresponse"]
        if job["jobstatus"] != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert job["jobstatus"] == 1 and job["jobresultcode"] == 0
    assert job["jobresulttype"] == "object"
    assert job["cmd"] == (
        "org.apache.cloudstack.api.command.admin.vm.StartVMCmdByAdmin")
    assert job["jobresult"]["virtualmachine"]["state"] == "Running"
    assert job["jobinstanceid"] == cloud.vm.id


def test_other_paths_are_not_the_api(cloud):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/client/",
               "QUERY_STRING": ""}
    started = {}
    cloud(environ, lambda status, headers: started.update(status=status))
    assert started["status"].startswith("404")


# -- failures on demand ----------------------------------------------------


def wait_job(cloud, job_id, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        job = signed(cloud, "queryAsyncJobResult", jobid=job_id)[1][
            "queryasyncjobresultresponse"]
        if job["jobstatus"] != 0:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def submit(cloud, command, vm):
    status, body = signed(cloud, command, id=vm.id)
    assert status == 200, body
    return body["%sresponse" % command.lower()]["jobid"]


def vm_state(cloud, vm):
    (entry,) = signed(cloud, "listVirtualMachines", id=vm.id)[1][
        "listvirtualmachinesresponse"]["virtualmachine"]
    return entry["state"]


def assert_failed_530(job, text):
    assert job["jobstatus"] == 2
    assert job["jobresultcode"] == 530
    assert job["jobresulttype"] == "object"
    assert job["jobresult"] == {"errorcode": 530, "errortext": text}


def test_a_named_job_fails_once_without_being_done(cloud):
    vm = cloud.vm
    key = ("destroyVirtualMachine", vm.id)
    cloud.fail_jobs[key] = "Unable to destroy: the KVM agent says no"
    job = wait_job(cloud, submit(cloud, "destroyVirtualMachine", vm))
    assert_failed_530(job, "Unable to destroy: the KVM agent says no")
    assert job["jobinstanceid"] == vm.id
    assert key not in cloud.fail_jobs  # one-shot: used up
    assert cloud.injected == [("job", key,
                               "Unable to destroy: the KVM agent says no")]
    # Nothing happened to the VM.
    assert vm_state(cloud, vm) == "Stopped"
    assert not vm.removed and vm.transition is None
    # The next destroy is done.
    job = wait_job(cloud, submit(cloud, "destroyVirtualMachine", vm))
    assert job["jobstatus"] == 1
    assert vm_state(cloud, vm) == "Destroyed"


def test_a_failed_stop_leaves_the_vm_running(cloud):
    vm = cloud.vm
    cloudstack_handlers.power_on(cloud, vm)
    cloud.fail_jobs[("stopVirtualMachine", vm.id)] = "agent timed out"
    job = wait_job(cloud, submit(cloud, "stopVirtualMachine", vm))
    assert_failed_530(job, "agent timed out")
    assert vm_state(cloud, vm) == "Running"
    assert cloud.kvm.is_running(vm.instancename)


def test_a_job_fails_a_given_number_of_times_or_always(cloud):
    vm = cloud.vm
    cloud.fail_jobs[("startVirtualMachine", vm.id)] = ("no capacity", 2)
    for _ in range(2):
        job = wait_job(cloud, submit(cloud, "startVirtualMachine", vm))
        assert_failed_530(job, "no capacity")
        assert vm_state(cloud, vm) == "Stopped"
    assert wait_job(cloud, submit(cloud, "startVirtualMachine",
                                  vm))["jobstatus"] == 1
    assert vm_state(cloud, vm) == "Running"

    cloud.fail_jobs[("stopVirtualMachine", vm.id)] = ("stuck", None)
    for _ in range(3):
        job = wait_job(cloud, submit(cloud, "stopVirtualMachine", vm))
        assert_failed_530(job, "stuck")
        assert vm_state(cloud, vm) == "Running"
    assert cloud.fail_jobs == {("stopVirtualMachine", vm.id): ("stuck",
                                                               None)}
    del cloud.fail_jobs[("stopVirtualMachine", vm.id)]
    assert wait_job(cloud, submit(cloud, "stopVirtualMachine",
                                  vm))["jobstatus"] == 1
    assert vm_state(cloud, vm) == "Stopped"


def test_a_job_failure_is_for_the_named_vm_and_command_only(cloud):
    other = cloud.add_vm("web-2", cloud.admin, cloud.host, cloud.vm.template,
                         cloud.vm.offering, cloud.root_volume(cloud.vm).pool,
                         "file-2", 1 << 26)
    cloud.fail_jobs[("startVirtualMachine", cloud.vm.id)] = "no"
    assert wait_job(cloud, submit(cloud, "startVirtualMachine",
                                  other))["jobstatus"] == 1
    assert wait_job(cloud, submit(cloud, "destroyVirtualMachine",
                                  cloud.vm))["jobstatus"] == 1
    assert cloud.fail_jobs == {("startVirtualMachine", cloud.vm.id): "no"}


def test_a_command_answers_an_http_error_once(cloud):
    vm = cloud.vm
    cloud.fail_calls["startVirtualMachine"] = (503, "management server busy")
    status, body = signed(cloud, "startVirtualMachine", id=vm.id)
    assert status == 503
    assert body == {"startvirtualmachineresponse": {
        "uuidList": [], "errorcode": 503, "cserrorcode": 9999,
        "errortext": "management server busy"}}
    assert cloud.jobs == {}  # not run
    assert vm_state(cloud, vm) == "Stopped"
    assert "startVirtualMachine" not in cloud.fail_calls
    assert cloud.injected == [("call", "startVirtualMachine",
                               "503 management server busy")]
    # The attempt is on record like any call.
    assert [c[1] for c in cloud.calls].count("startVirtualMachine") == 1
    # The next call is answered.
    assert wait_job(cloud, submit(cloud, "startVirtualMachine",
                                  vm))["jobstatus"] == 1
    assert vm_state(cloud, vm) == "Running"


def test_a_command_fails_a_given_number_of_times(cloud):
    cloud.fail_calls["listVirtualMachines"] = (530, "db down", 2)
    for _ in range(2):
        status, body = signed(cloud, "listVirtualMachines", id=cloud.vm.id)
        assert status == 530
        assert body["listvirtualmachinesresponse"]["errortext"] == "db down"
    assert signed(cloud, "listVirtualMachines", id=cloud.vm.id)[0] == 200
    assert cloud.fail_calls == {}


@pytest.fixture
def served(cloud):
    cloud.endpoint = cloud.serve()
    return cloud


def cs2os_client(cloud, timeout=30):
    return cloudstack_client.CloudStackClient(
        cloud.endpoint, cloud.admin.apikey, cloud.admin.secretkey,
        timeout=timeout, job_poll_interval=0.01, job_timeout=10)


def test_cs2os_sees_the_failed_job_and_the_http_error(served):
    cloud, vm = served, served.vm
    client = cs2os_client(cloud)
    cloud.fail_jobs[("startVirtualMachine", vm.id)] = "agent says no"
    with pytest.raises(cloudstack_errors.CloudStackJobFailed,
                       match="agent says no") as failed:
        client.start_vm(vm.id)
    assert failed.value.kwargs["errorcode"] == 530
    assert cloud.vm_state(vm) == "Stopped"
    cloud.fail_calls["startVirtualMachine"] = (530, "internal error")
    with pytest.raises(cloudstack_errors.CloudStackAPIError,
                       match="internal error"):
        client.start_vm(vm.id)
    assert cloud.vm_state(vm) == "Stopped"
    assert client.start_vm(vm.id)["state"] == "Running"


def test_a_command_times_out_once_without_being_run(served):
    cloud, vm = served, served.vm
    cloud.fail_calls["startVirtualMachine"] = ("timeout", 30)
    started = time.monotonic()
    with pytest.raises(cloudstack_errors.CloudStackUnreachable):
        cs2os_client(cloud, timeout=1).start_vm(vm.id)
    assert time.monotonic() - started < 10
    assert cloud.jobs == {} and cloud.vm_state(vm) == "Stopped"
    assert "startVirtualMachine" not in cloud.fail_calls
    # The next one is answered (the held request is released at shutdown).
    assert cs2os_client(cloud).start_vm(vm.id)["state"] == "Running"


# -- a user behind cs2os's back ---------------------------------------------


def test_user_start_runs_the_start_command_as_the_owner(cloud):
    user = cloud.add_account("bob", admin=False)
    vm = cloud.add_vm("bobs", user, cloud.host, cloud.vm.template,
                      cloud.vm.offering, cloud.root_volume(cloud.vm).pool,
                      "file-3", 1 << 26)
    job = cloud.user_start(vm)
    assert (job.status, job.resultcode) == (1, 0)
    assert job.account is user
    assert job.cmd == (
        "org.apache.cloudstack.api.command.user.vm.StartVMCmd")
    assert job.result["virtualmachine"]["state"] == "Running"
    assert vm_state(cloud, vm) == "Running"
    assert cloud.kvm.is_running(vm.instancename)
    # Not one of cs2os's calls; on record as the user's.
    assert not any(c[1] == "startVirtualMachine" for c in cloud.calls)
    assert cloud.user_calls == [("startVirtualMachine", vm.id, "bob")]
    # Its job is queryable like any other (by the owner and the admin).
    assert wait_job(cloud, job.id)["jobstatus"] == 1


def test_user_start_goes_through_the_job_failures_too(cloud):
    cloud.fail_jobs[("startVirtualMachine", cloud.vm.id)] = "no host"
    job = cloud.user_start(cloud.vm)
    assert (job.status, job.resultcode) == (2, 530)
    assert job.result == {"errorcode": 530, "errortext": "no host"}
    assert vm_state(cloud, cloud.vm) == "Stopped"


def test_user_start_of_a_destroyed_vm_is_refused_by_the_job(cloud):
    assert wait_job(cloud, submit(cloud, "destroyVirtualMachine",
                                  cloud.vm))["jobstatus"] == 1
    job = cloud.user_start(cloud.vm)
    assert job.status == 2 and job.resultcode == 431
    assert vm_state(cloud, cloud.vm) == "Destroyed"


def test_user_start_of_someone_elses_vm_is_refused(cloud):
    user = cloud.add_account("mallory", admin=False)
    with pytest.raises(cloudstack_handlers.ApiError) as refused:
        cloud.user_start(cloud.vm, account=user)
    assert refused.value.code == 531
    assert cloud.jobs == {} and vm_state(cloud, cloud.vm) == "Stopped"
