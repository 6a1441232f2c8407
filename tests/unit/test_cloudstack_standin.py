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

from tests.fakes import cloudstack_api
from tests.fakes import cloudstack_signature as signature


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
