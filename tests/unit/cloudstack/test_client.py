"""The CloudStack client: the real cs library against the stand-in.

The stand-in's WSGI app runs in this process (tools/testbed/wsgi_session);
its VMs are flags (MemoryKVM).  The functional tests do the same over HTTP
with real libvirt domains.
"""

import contextlib
import logging
import threading
import uuid

import pytest
import requests
from oslo_config import fixture as config_fixture

from cs2os_agent import conf
from cs2os_agent.cloudstack import client as cs_client
from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.conf import cloudstack as cloudstack_conf
from tools.testbed import cloudstack_api
from tools.testbed import cloudstack_handlers
from tools.testbed import cloudstack_kvm
from tools.testbed import wsgi_session

ENDPOINT = wsgi_session.BASE_URL + "/client/api"


class Cloud:
    """A small cloud: one zone, host, NFS pool, template; VMs on demand."""

    def __init__(self):
        self.kvm = cloudstack_kvm.MemoryKVM()
        self.api = cloudstack_api.FakeCloudStack(self.kvm)
        self.admin = self.api.add_account("admin")
        self.user = self.api.add_account("alice", admin=False)
        self.zone = self.api.add_zone("zone-1")
        self.host = self.api.add_host(self.zone, "kvm-1", "192.0.2.10")
        self.pool = self.api.add_storage_pool(self.zone, "nfs-1")
        self.template = self.api.add_template(self.zone, "tiny", 1 << 26,
                                              self.admin)
        self.offering = self.api.add_service_offering("small")
        self.network = self.api.add_network(self.zone, "guest")

    def vm(self, name, account=None, running=False):
        vm = self.api.add_vm(name, account or self.user, self.host,
                             self.template, self.offering, self.pool,
                             str(uuid.uuid4()), 1 << 26, [self.network])
        if running:
            self.kvm.running.add(vm.instancename)
        return vm

    def client(self, account=None, secret=None, **kwargs):
        account = account or self.admin
        kwargs.setdefault("job_poll_interval", 0.01)
        return cs_client.CloudStackClient(
            ENDPOINT, account.apikey, secret or account.secretkey,
            session=wsgi_session.session_for(self.api), **kwargs)


@pytest.fixture
def cloud():
    made = Cloud()
    yield made
    made.api.shutdown()


def test_find_vm_by_id_and_by_exact_name_across_accounts(cloud):
    vm = cloud.vm("web-1")
    cloud.vm("web-10")  # CloudStack's name filter matches substrings
    client = cloud.client()
    assert client.find_vm(vm.id)["name"] == "web-1"
    assert client.find_vm(vm.id.upper())["id"] == vm.id
    found = client.find_vm("web-1")
    assert found["id"] == vm.id
    # The VM belongs to another account: only listall=true shows it.
    assert all(call[2].get("listall") == "true"
               for call in cloud.api.calls if call[1] == "listVirtualMachines")


def test_a_cloudstack_projects_vm_is_found_by_name_and_lists_its_volumes(
        cloud):
    project = cloud.api.add_project("erp")
    vm = cloud.api.add_vm("erp-db", cloud.user, cloud.host, cloud.template,
                          cloud.offering, cloud.pool, str(uuid.uuid4()),
                          1 << 26, [cloud.network], project=project)
    cloud.vm("web-1")
    client = cloud.client()
    # Without a projectid CloudStack skips a project's VMs, even for a
    # root admin with listall: the name is looked up with projectid=-1 too.
    found = client.find_vm("erp-db")
    assert (found["id"], found["projectid"]) == (vm.id, project.id)
    assert "account" not in found
    assert client.find_vm(vm.id)["id"] == vm.id
    volumes = client.list_volumes(vm.id, found["projectid"])
    assert [v["type"] for v in volumes] == ["ROOT"]
    # Asked without the project, CloudStack lists none of them.
    assert client.list_volumes(vm.id) == []


def test_requests_are_signed_posts(cloud):
    cloud.vm("web-1")
    cloud.client().find_vm("web-1")
    method, command, params = cloud.api.calls[-1]
    assert (method, command) == ("POST", "listVirtualMachines")
    assert params["signatureVersion"] == "3" and params["expires"]


def test_unknown_vm(cloud):
    client = cloud.client()
    with pytest.raises(cloudstack_errors.CloudStackVMNotFound):
        client.find_vm("nope")
    # An unknown uuid is answered with 431 "Invalid parameter id value=".
    with pytest.raises(cloudstack_errors.CloudStackVMNotFound) as info:
        client.find_vm(str(uuid.uuid4()))
    assert info.value.code == 404
    with pytest.raises(cloudstack_errors.CloudStackVMNotFound):
        client.find_vm("web~1")
    assert not any("~" in str(c[2]) for c in cloud.api.calls)


def test_a_uuid_shaped_name_is_found_by_name(cloud):
    name = str(uuid.uuid4())
    vm = cloud.vm(name)
    assert cloud.client().find_vm(name)["id"] == vm.id


def test_ambiguous_name_lists_the_ids(cloud):
    first = cloud.vm("db", cloud.user)
    second = cloud.vm("db", cloud.admin)
    with pytest.raises(cloudstack_errors.CloudStackVMAmbiguous) as info:
        cloud.client().find_vm("db")
    assert first.id in str(info.value) and second.id in str(info.value)
    assert info.value.code == 409


def test_wrong_secret_or_key_is_auth_failed(cloud):
    cloud.vm("web-1")
    with pytest.raises(cloudstack_errors.CloudStackAuthFailed) as info:
        cloud.client(secret="not-the-secret").find_vm("web-1")
    assert info.value.kwargs["errorcode"] == 401
    assert "unable to verify user credentials" in str(info.value)
    stranger = cs_client.CloudStackClient(
        ENDPOINT, "unknown-key", "x",
        session=wsgi_session.session_for(cloud.api))
    with pytest.raises(cloudstack_errors.CloudStackAuthFailed):
        stranger.find_vm("web-1")


def test_secrets_never_reach_the_log(cloud, caplog):
    caplog.set_level(logging.DEBUG)
    vm = cloud.vm("web-1")
    client = cloud.client()
    client.stop_vm(vm.id)
    with pytest.raises(cloudstack_errors.CloudStackAuthFailed):
        cloud.client(secret="wrong").find_vm("web-1")
    assert "stopVirtualMachine" in caplog.text and vm.id in caplog.text
    for secret in (cloud.admin.secretkey, "wrong", "signature"):
        assert secret not in caplog.text
    assert cloud.admin.secretkey not in repr(client)


class _Failing(requests.adapters.BaseAdapter):
    def __init__(self, error):
        super().__init__()
        self.error = error

    def send(self, request, **kwargs):
        # requests puts the URL, query string and all, in the message.
        raise self.error(
            "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries "
            "exceeded with url: /client/api?apiKey=k&signature=SIG%3D "
            "(Caused by NewConnectionError('Connection refused'))")

    def close(self):
        pass


def _failing_client(error):
    session = requests.Session()
    session.mount("http://", _Failing(error))
    return cs_client.CloudStackClient(ENDPOINT, "k", "s", session=session)


def test_connection_error_is_unreachable_without_the_query():
    client = _failing_client(requests.exceptions.ConnectionError)
    with pytest.raises(cloudstack_errors.CloudStackUnreachable) as info:
        client.find_vm("web-1")
    assert "Connection refused" in str(info.value)
    assert "SIG" not in str(info.value) and "apiKey" not in str(info.value)
    assert info.value.code == 503
    with pytest.raises(cloudstack_errors.CloudStackUnreachable):
        _failing_client(requests.exceptions.ReadTimeout).find_vm("web-1")


def test_tls_failure_says_so():
    with pytest.raises(cloudstack_errors.CloudStackError) as info:
        _failing_client(requests.exceptions.SSLError).find_vm("web-1")
    assert not isinstance(info.value, cloudstack_errors.CloudStackUnreachable)
    assert "ca_file" in str(info.value) and "SIG" not in str(info.value)


def test_a_page_that_is_not_the_api_is_a_cloudstack_error(cloud):
    client = cs_client.CloudStackClient(
        wsgi_session.BASE_URL + "/client/wrong", cloud.admin.apikey,
        cloud.admin.secretkey, session=wsgi_session.session_for(cloud.api))
    with pytest.raises(cloudstack_errors.CloudStackError) as info:
        client.find_vm("web-1")
    assert "404" in str(info.value)


def test_non_admin_cannot_list_hosts(cloud):
    with pytest.raises(cloudstack_errors.CloudStackAuthFailed) as info:
        cloud.client(cloud.user).get_host(cloud.host.id)
    assert "listHosts" in str(info.value)


def test_lookups_of_pool_template_offering_host(cloud):
    client = cloud.client()
    assert client.get_storage_pool(cloud.pool.id)["type"] == (
        "NetworkFilesystem")
    assert client.get_template(cloud.template.id)["name"] == "tiny"
    assert client.get_service_offering(cloud.offering.id)["memory"] == 64
    assert client.get_host(cloud.host.id)["ipaddress"] == "192.0.2.10"
    with pytest.raises(cloudstack_errors.CloudStackObjectNotFound) as info:
        client.get_template(str(uuid.uuid4()))
    assert "template" in str(info.value)
    with pytest.raises(cloudstack_errors.CloudStackObjectNotFound):
        client.get_storage_pool("not-a-uuid")


def test_list_volumes_root_first(cloud):
    vm = cloud.vm("web-1")
    cloud.api.add_data_disk(vm, cloud.pool, "data-file", 1 << 20, "data-1")
    volumes = cloud.client().list_volumes(vm.id)
    assert [v["type"] for v in volumes] == ["ROOT", "DATADISK"]
    with pytest.raises(cloudstack_errors.CloudStackVMNotFound):
        cloud.client().list_volumes(str(uuid.uuid4()))


def test_stop_start_destroy_wait_for_their_jobs(cloud):
    vm = cloud.vm("web-1", running=True)
    client = cloud.client()
    assert client.find_vm(vm.id)["state"] == "Running"
    assert client.find_vm(vm.id)["hostid"] == cloud.host.id
    stopped = client.stop_vm(vm.id)
    assert stopped["state"] == "Stopped" and "hostid" not in stopped
    assert vm.instancename not in cloud.kvm.running
    assert client.start_vm(vm.id)["state"] == "Running"
    assert client.stop_vm(vm.id, forced=True)["state"] == "Stopped"
    # The last stop asked (the job may have been polled more than once).
    stops = [c[2] for c in cloud.api.calls if c[1] == "stopVirtualMachine"]
    assert [p.get("forced") for p in stops] == [None, "true"]
    assert client.destroy_vm(vm.id)["state"] == "Destroyed"
    client.destroy_vm(vm.id, expunge=True)
    with pytest.raises(cloudstack_errors.CloudStackVMNotFound):
        client.find_vm(vm.id)
    assert cloud.kvm.deleted == [
        "/mnt/%s/%s" % (cloud.pool.id, cloud.api.root_volume(vm).path)]


def test_failed_job_carries_cloudstacks_error(cloud):
    vm = cloud.vm("web-1")
    cloud.kvm.fail_start[vm.instancename] = "no capacity on kvm-1"
    with pytest.raises(cloudstack_errors.CloudStackJobFailed) as info:
        cloud.client().start_vm(vm.id)
    assert info.value.kwargs["errorcode"] == 530
    assert "no capacity on kvm-1" in str(info.value)
    assert "startVirtualMachine" in str(info.value)


def test_action_on_unknown_vm_is_not_found(cloud):
    with pytest.raises(cloudstack_errors.CloudStackVMNotFound):
        cloud.client().stop_vm(str(uuid.uuid4()))


def test_job_timeout_names_the_job_and_it_can_be_waited_for_again(cloud):
    vm = cloud.vm("web-1")
    release = threading.Event()
    start = cloud.kvm.start

    def slow_start(spec):
        release.wait(10)
        start(spec)

    cloud.kvm.start = slow_start
    client = cloud.client(job_timeout=0.2)
    with pytest.raises(cloudstack_errors.CloudStackJobTimeout) as info:
        client.start_vm(vm.id)
    assert info.value.code == 504
    assert client.find_vm(vm.id)["state"] == "Starting"
    release.set()
    result = client.wait_for_job(info.value.kwargs["job_id"])
    assert result["virtualmachine"]["state"] == "Running"


@contextlib.contextmanager
def _clean_stop_held(cloud):
    """A running VM whose clean stop was submitted; the KVM host's stop
    waits (the job stays pending) until the block ends, then the job runs
    to its end.  Yields (vm, client, job id)."""
    vm = cloud.vm("web-1", running=True)
    release = threading.Event()
    stop = cloud.kvm.stop

    def held(name, forced):
        assert release.wait(10)
        stop(name, forced)

    cloud.kvm.stop = held
    client = cloud.client()
    try:
        yield vm, client, client.stop_vm_async(vm.id)
    finally:
        release.set()
    cloudstack_handlers.wait_for_jobs(cloud.api)


def _queries(cloud):
    return [c for c in cloud.api.calls if c[1] == "queryAsyncJobResult"]


def test_stop_vm_async_submits_a_clean_stop_and_waits_for_nothing(cloud):
    with _clean_stop_held(cloud) as (vm, client, job_id):
        _, command, params = cloud.api.calls[-1]
        assert (command, params["id"]) == ("stopVirtualMachine", vm.id)
        assert "forced" not in params  # the guest shuts down cleanly
        assert cloud.api.jobs[job_id].vm is vm
        # Returned with the job still running, and never asked about it.
        assert _queries(cloud) == []
        assert cloud.api.jobs[job_id].status == 0
    assert vm.instancename not in cloud.kvm.running
    assert client.wait_for_job(job_id)["virtualmachine"]["state"] == \
        "Stopped"


def test_poll_job_asks_once_none_while_pending_then_the_result(cloud):
    with _clean_stop_held(cloud) as (_vm, client, job_id):
        assert client.poll_job(job_id, "stopVirtualMachine", "web-1") is None
        assert len(_queries(cloud)) == 1
        assert _queries(cloud)[0][2]["jobid"] == job_id
    result = client.poll_job(job_id, "stopVirtualMachine", "web-1")
    assert result["virtualmachine"]["state"] == "Stopped"
    assert len(_queries(cloud)) == 2


def test_poll_job_raises_a_failed_jobs_error(cloud):
    vm = cloud.vm("web-1", running=True)

    def refuse(name, forced):
        raise cloudstack_kvm.PowerError("host busy")

    cloud.kvm.stop = refuse
    client = cloud.client()
    job_id = client.stop_vm_async(vm.id)
    cloudstack_handlers.wait_for_jobs(cloud.api)
    with pytest.raises(cloudstack_errors.CloudStackJobFailed) as info:
        client.poll_job(job_id, "stopVirtualMachine", "web-1")
    assert info.value.kwargs["job_id"] == job_id
    assert info.value.kwargs["errorcode"] == 530
    assert "stopVirtualMachine web-1" in str(info.value)
    assert "host busy" in str(info.value)
    # wait_for_job says the same.
    with pytest.raises(cloudstack_errors.CloudStackJobFailed):
        client.wait_for_job(job_id, "stopVirtualMachine", "web-1")


class _Flaky(wsgi_session.WSGIAdapter):
    """The management server does not answer the first ``drops`` job
    queries (a restart, a network blip)."""

    def __init__(self, app, drops):
        super().__init__(app)
        self.drops = drops

    def send(self, request, **kwargs):
        body = request.body or ""
        if isinstance(body, bytes):
            body = body.decode()
        if "queryAsyncJobResult" in body and self.drops:
            self.drops -= 1
            raise requests.exceptions.ConnectionError("Connection refused")
        return super().send(request, **kwargs)


def test_wait_for_job_retries_through_an_unreachable_server(cloud, caplog):
    vm = cloud.vm("web-1", running=True)
    session = requests.Session()
    flaky = _Flaky(cloud.api, drops=2)
    session.mount(wsgi_session.BASE_URL, flaky)
    client = cs_client.CloudStackClient(
        ENDPOINT, cloud.admin.apikey, cloud.admin.secretkey,
        session=session, job_poll_interval=0.01, job_timeout=10)
    job_id = client.stop_vm_async(vm.id)
    # One poll does not retry: the caller decides.
    with pytest.raises(cloudstack_errors.CloudStackUnreachable):
        client.poll_job(job_id)
    result = client.wait_for_job(job_id, "stopVirtualMachine", "web-1")
    assert result["virtualmachine"]["state"] == "Stopped"
    assert flaky.drops == 0
    assert "Still waiting for CloudStack job %s" % job_id in caplog.text


def test_tls_options_reach_cs():
    def api(**kwargs):
        return cs_client.CloudStackClient(
            "https://cs.example/client/api", "k", "s", **kwargs)._api()

    assert api().verify is True
    # cs turns verify=False into True; the client must not rely on it.
    assert api(verify=False).verify is False
    assert api(ca_file="/etc/ssl/cs.pem").verify == "/etc/ssl/cs.pem"


def test_missing_settings_are_named():
    with pytest.raises(cloudstack_errors.CloudStackNotConfigured) as info:
        cs_client.CloudStackClient("http://x/client/api", "k", None)
    assert "secret_key" in str(info.value)


def test_from_conf():
    fixture = config_fixture.Config(conf.CONF)
    fixture.setUp()
    try:
        fixture.config(group="cloudstack", endpoint="http://x/client/api",
                       api_key="k", secret_key="s", job_timeout=7)
        client = cs_client.CloudStackClient.from_conf(conf.CONF)
        assert client.endpoint == "http://x/client/api"
        assert client.job_timeout == 7
        assert client.job_poll_interval == 2.0
    finally:
        fixture.cleanUp()


def test_options():
    c = conf.CONF.cloudstack
    assert (c.endpoint, c.api_key, c.secret_key) == (None, None, None)
    assert (c.timeout, c.verify, c.ca_file) == (30, True, None)
    assert (c.job_poll_interval, c.job_timeout) == (2.0, 1800)
    (options,) = cloudstack_conf.list_opts().values()
    secret = {opt.name: opt.secret for opt in options}
    assert secret["secret_key"] and not secret["api_key"]
