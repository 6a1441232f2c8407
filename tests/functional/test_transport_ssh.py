"""The ssh transport, for real: cs2os-agent pulls overlays from an sshd.

A private sshd on 127.0.0.1 (tools/testbed/sshd.py) plays the
CloudStack KVM host: it serves the CloudStack-like volumes the other
functional tests make, under the same /mnt/<pool>/ layout.  The agent runs
as its own process over RabbitMQ with the harness's client key and
known_hosts file; errors arrive typed through RPC, and every refusal leaves
the instance directory byte for byte as it was.
"""

import os
import pwd
import time
import uuid

import oslo_messaging as messaging
import pytest

from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from cs2os_agent.transfer import sshcmd
from tests.functional import test_transport_ranges as ranges_checks
from tests.functional.checks import sync_expecting
from tests.functional.test_agent_migration import console
from tools.testbed import harness
from tools.testbed import images
from tools.testbed import process
from tools.testbed import sshd
from tools.testbed.harness import Call
from tools.testbed.harness import wait_console
from tools.testbed.harness import wait_for

MiB = images.MiB
RUNNING = 1  # libvirt.VIR_DOMAIN_RUNNING


@pytest.fixture(scope="module")
def server(workdir):
    # Fail, never skip: a CI machine without sshd must not pass quietly.
    try:
        srv = sshd.Server(workdir).start()
    except sshd.HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield srv
    srv.stop()


def ssh_agent(agents, server, cloudstack_root, name, known_hosts=None,
              **kwargs):
    return agents.start(name, transfer_options={
        "ssh_private_key_file": server.client_key,
        "ssh_known_hosts_file": known_hosts or server.known_hosts,
        "remote_source_roots": os.path.join(cloudstack_root, "mnt"),
        "stall_timeout": 20,
    }, **kwargs)


@pytest.fixture(scope="module")
def agent(agents, server, cloudstack_root):
    return ssh_agent(agents, server, cloudstack_root, "ssh")


def ssh_source(server, path, **kw):
    source = {"transport": "ssh", "host": server.host, "port": server.port,
              "path": path}
    source.update(kw)
    return source


def no_ssh_left(server, timeout=15):
    wait_for(lambda: not server.client_processes(), timeout,
             "the agent's ssh processes to end")


# -- it works ----------------------------------------------------------------


def test_cold_migration_over_ssh_end_to_end(agent, server, agent_api, ctxt,
                                            cloudstack_volume, nova_instance,
                                            conductor_stub):
    vol = cloudstack_volume()
    # A template much bigger than the overlay: moving it would show.
    images.qemu_io_write(vol.template, "qcow2", 0x44, 36 * MiB, 24 * MiB)
    assert os.path.getsize(vol.template) > 4 * os.path.getsize(vol.overlay)
    inst = nova_instance(vol.template, 128 * MiB, start=True)
    wait_console(console(inst), vol.template_message)
    migration = "mig-ssh-%s" % uuid.uuid4().hex

    result = agent_api.sync_overlay(ctxt, agent.host, migration, inst.uuid,
                                    ssh_source(server, vol.overlay))
    staged = os.path.join(inst.instance_dir, "disk.cs2os-staged")
    assert result["staged_path"] == staged
    assert result["reused"] is False
    assert result["resumed_at"] == 0
    # Exactly the overlay file crossed the wire: not the template, not a
    # byte more or less.
    assert result["bytes_copied"] == os.path.getsize(vol.overlay)
    assert result["source"]["transport"] == "ssh"
    assert result["source"]["path"] == vol.overlay
    assert result["source"]["size"] == os.path.getsize(vol.overlay)
    assert result["backing_file"] == inst.base
    assert result["grown"] is True
    qemu_img.compare(vol.reference, staged, "qcow2", "qcow2")
    # Progress went to the conductor topic, ending at 100%.
    reports = conductor_stub.final_reports(migration)
    assert reports[-1]["bytes_done"] == result["bytes_copied"]
    # The agent logs what it ran; never a key's content.
    log = agent.log()
    assert "ssh -F none -o BatchMode=yes" in log
    with open(server.client_key) as f:
        secret = f.read().splitlines()[1]
    assert secret not in log

    # The same migration again: already staged from the same file.
    again = agent_api.sync_overlay(ctxt, agent.host, migration, inst.uuid,
                                   ssh_source(server, vol.overlay))
    assert again["reused"] is True

    inst.domain.destroy()  # Nova's stop
    assert agent_api.swap_disk(ctxt, agent.host, migration,
                               inst.uuid)["swapped"] is True
    inst.domain.create()  # Nova's start
    # The guest boots the CloudStack VM's disk: its own bytes say so.
    wait_console(console(inst), vol.message)
    assert inst.domain.state()[0] == RUNNING
    qemu_img.compare(vol.reference, inst.disk, "qcow2", "qcow2",
                     force_share=True)
    assert not server.client_processes()


# root logs in to bash, the test user to /bin/sh (dash).
@pytest.mark.parametrize("user", ["root", sshd.TEST_USER])
def test_remote_shell_gets_every_path_quoted(agent, server, agent_api, ctxt,
                                             instance, user):
    """A file name full of shell syntax is read as a name, never run."""
    vol = instance.volume
    # Were any of it run, the remote shell would create this in its working
    # directory: the user's home.
    canary = "cs2os-canary-%s" % uuid.uuid4().hex
    name = "vol $(touch %s) `touch %s`; touch %s 'q' \"d\" * \\" % (
        canary, canary, canary)
    odd = os.path.join(vol.pool_dir, name)
    os.link(vol.overlay, odd)
    result = agent_api.sync_overlay(ctxt, agent.host, "mig-odd", instance.uuid,
                                    ssh_source(server, odd, user=user))
    assert not os.path.exists(os.path.join(pwd.getpwnam(user).pw_dir,
                                           canary))
    assert result["source"]["path"] == odd
    qemu_img.compare(vol.reference, result["staged_path"], "qcow2", "qcow2")


# -- refusals: typed, named, nothing changed ----------------------------------


def test_wrong_host_key_refused(agents, server, cloudstack_root, agent_api,
                                ctxt, instance):
    wrong = ssh_agent(agents, server, cloudstack_root, "ssh-wrongkey",
                      known_hosts=server.wrong_known_hosts)
    with open(server.wrong_known_hosts) as f:
        known_before = f.read()
    msg = sync_expecting(wrong, agent_api, ctxt, instance,
                         ssh_source(server, instance.volume.overlay),
                         exception.SourceHostKeyChanged)
    assert "127.0.0.1 port %d" % server.port in msg
    assert "does not match" in msg
    # The fix, ready to paste once the new key was checked out of band.
    assert "ssh-keygen -f %s -R '%s'" % (server.wrong_known_hosts,
                                         server.entry) in msg
    assert "ssh-keyscan -p %d 127.0.0.1 >> %s" % (
        server.port, server.wrong_known_hosts) in msg
    # The agent never "fixes" known_hosts by itself.
    with open(server.wrong_known_hosts) as f:
        assert f.read() == known_before


def test_unknown_host_key_refused(agents, server, cloudstack_root, agent_api,
                                  ctxt, instance):
    unknown = ssh_agent(agents, server, cloudstack_root, "ssh-unknownkey",
                        known_hosts=server.other_known_hosts)
    with open(server.other_known_hosts) as f:
        known_before = f.read()
    msg = sync_expecting(unknown, agent_api, ctxt, instance,
                         ssh_source(server, instance.volume.overlay),
                         exception.SourceHostKeyUnknown)
    assert "is not in %s" % server.other_known_hosts in msg
    assert "ssh-keyscan -p %d 127.0.0.1 >> %s" % (
        server.port, server.other_known_hosts) in msg
    # The agent never learns a key by itself.
    with open(server.other_known_hosts) as f:
        assert f.read() == known_before


def test_unreachable_host(agent, server, agent_api, ctxt, instance):
    closed = process.free_port()  # nothing listens there
    source = dict(ssh_source(server, instance.volume.overlay), port=closed)
    msg = sync_expecting(agent, agent_api, ctxt, instance, source,
                         exception.SourceUnreachable)
    assert "127.0.0.1 port %d" % closed in msg
    assert "Connection refused" in msg


def test_missing_file(agent, server, agent_api, ctxt, instance):
    missing = os.path.join(instance.volume.pool_dir, str(uuid.uuid4()))
    msg = sync_expecting(agent, agent_api, ctxt, instance,
                         ssh_source(server, missing),
                         exception.SourceNotFound)
    assert missing in msg and "does not exist" in msg


def test_not_a_regular_file(agent, server, agent_api, ctxt, instance):
    # A FIFO would block a reader forever: it must be refused, not read.
    fifo = os.path.join(instance.volume.pool_dir, "fifo-%s" % uuid.uuid4())
    os.mkfifo(fifo)
    for path in (fifo, instance.volume.pool_dir):
        started = time.monotonic()
        msg = sync_expecting(agent, agent_api, ctxt, instance,
                             ssh_source(server, path),
                             exception.InvalidSource)
        assert "not a regular file" in msg
        assert time.monotonic() - started < 15


def test_permission_denied(agent, server, agent_api, ctxt, instance):
    vol = instance.volume
    # A file root may read and the unprivileged login may not.
    private = os.path.join(vol.pool_dir, "private-%s" % uuid.uuid4().hex)
    images.run("cp", "--sparse=always", vol.overlay, private)
    os.chmod(private, 0o600)
    msg = sync_expecting(agent, agent_api, ctxt, instance,
                         ssh_source(server, private, user=sshd.TEST_USER),
                         exception.SourceUnreadable)
    assert private in msg and "Permission denied" in msg
    # The same login reads a file it may read.
    os.chmod(private, 0o644)
    result = agent_api.sync_overlay(
        ctxt, agent.host, "mig-perm", instance.uuid,
        ssh_source(server, private, user=sshd.TEST_USER))
    qemu_img.compare(vol.reference, result["staged_path"], "qcow2", "qcow2")


def test_login_refused(agent, server, agent_api, ctxt, instance):
    msg = sync_expecting(agent, agent_api, ctxt, instance,
                         ssh_source(server, instance.volume.overlay,
                                    user="nobody"),
                         exception.SourceAuthFailed)
    assert "as nobody to 127.0.0.1 port %d" % server.port in msg
    assert "authorized_keys" in msg


def test_outside_the_roots_refused(agent, server, agent_api, ctxt, instance):
    msg = sync_expecting(agent, agent_api, ctxt, instance,
                         ssh_source(server, "/etc/passwd"),
                         exception.RemoteSourceNotAllowed)
    assert "remote_source_roots" in msg
    # A symlink inside the roots that leads out of them: the host says
    # where it really points, and that is refused too.
    link = os.path.join(instance.volume.pool_dir, "link-%s" % uuid.uuid4())
    os.symlink("/etc/passwd", link)
    msg = sync_expecting(agent, agent_api, ctxt, instance,
                         ssh_source(server, link),
                         exception.RemoteSourceNotAllowed)
    assert "really /etc/passwd" in msg


def test_bad_request_refused_before_connecting(agent, server, agent_api, ctxt,
                                               instance):
    for source, words in (
        (ssh_source(server, instance.volume.overlay,
                    host="-oProxyCommand=touch /tmp/x"), "host"),
        (ssh_source(server, instance.volume.overlay, port=0), "port"),
        (ssh_source(server, instance.volume.overlay, user="root x"), "user"),
        (ssh_source(server, instance.volume.pool_dir + "/../x"),
         "normalised"),
    ):
        msg = sync_expecting(agent, agent_api, ctxt, instance, source,
                             exception.InvalidSource)
        assert words in msg


# -- interruptions -----------------------------------------------------------


def test_agent_killed_mid_copy_then_retry_resumes(
        agents, server, cloudstack_root, agent_api, ctxt, cloudstack_volume,
        nova_instance):
    victim = ssh_agent(agents, server, cloudstack_root, "ssh-victim",
                       max_bandwidth_mbps=40)  # 5 MB/s
    vol = cloudstack_volume(writes=((0x5A, 4 * MiB, 30 * MiB),))
    inst = nova_instance(vol.template, 64 * MiB)
    migration = "mig-ssh-kill-%s" % uuid.uuid4().hex
    source = ssh_source(server, vol.overlay)
    part = os.path.join(inst.instance_dir, "disk.cs2os-staged.part")
    staged = os.path.join(inst.instance_dir, "disk.cs2os-staged")
    call = Call(agent_api.sync_overlay, ctxt, victim.host, migration,
                inst.uuid, source)
    call.start()
    # Kill only once a checkpoint is recorded (every 4 MiB in tests).
    wait_for(lambda: harness.durable_offset(part) > 0,
             what="a checkpointed partial copy")
    assert server.client_processes()
    victim.kill()  # SIGKILL: no cleanup of any kind runs
    call.join(60)
    assert isinstance(call.error, messaging.MessagingTimeout), call.error
    # The orphaned ssh notices its reader is gone and ends.
    no_ssh_left(server)
    # A half-written file is never mistaken for a finished one.
    assert os.path.exists(part)
    assert not os.path.exists(staged)
    killed_at = os.path.getsize(part)

    victim.start(agent_api, ctxt)
    result = agent_api.sync_overlay(ctxt, victim.host, migration, inst.uuid,
                                    source)
    assert result["reused"] is False
    assert 0 < result["resumed_at"] <= killed_at
    # Only the rest crossed the wire (tail from the checkpoint on).
    assert result["bytes_copied"] == (os.path.getsize(vol.overlay)
                                      - result["resumed_at"])
    assert not os.path.exists(part)
    assert not os.path.exists(part + ".json")
    qemu_img.compare(vol.reference, staged, "qcow2", "qcow2")
    no_ssh_left(server)


def test_cancel_mid_copy(agents, server, cloudstack_root, agent_api, ctxt,
                         cloudstack_volume, nova_instance):
    slow = ssh_agent(agents, server, cloudstack_root, "ssh-slow",
                     max_bandwidth_mbps=40)
    vol = cloudstack_volume(writes=((0x5A, 4 * MiB, 40 * MiB),))
    inst = nova_instance(vol.template, 64 * MiB)
    before = images.dir_state(inst.instance_dir)
    migration = "mig-ssh-cancel-%s" % uuid.uuid4().hex
    part = os.path.join(inst.instance_dir, "disk.cs2os-staged.part")
    call = Call(agent_api.sync_overlay, ctxt, slow.host, migration,
                inst.uuid, ssh_source(server, vol.overlay))
    call.start()
    wait_for(lambda: os.path.exists(part) and os.path.getsize(part) > 0,
             what="the copy to start")
    assert server.client_processes()
    answer = agent_api.cancel(ctxt, slow.host, migration)
    assert answer == {"migration_id": migration, "cancelled": True}
    call.join(30)
    assert isinstance(call.error, exception.MigrationCancelled), call.error
    assert images.dir_state(inst.instance_dir) == before
    # The agent killed its ssh; nothing keeps reading the host's file.
    no_ssh_left(server, timeout=5)


# -- ranged reads and copies around skipped ranges, in this process -----------


@pytest.fixture
def connections(monkeypatch):
    """The remote command of every ssh the transport runs."""
    commands = []
    real = sshcmd.build_argv

    def counting(target, options, command):
        commands.append(command)
        return real(target, options, command)

    monkeypatch.setattr(sshcmd, "build_argv", counting)
    return commands


@pytest.fixture(scope="module")
def ranges_file(workdir):
    directory = os.path.join(workdir, "ranges-ssh", "pool")
    return directory, ranges_checks.make_file(directory, "it's a $(vol)")


# root logs in to bash, the test user to /bin/sh (dash).
@pytest.mark.parametrize("user", ["root", sshd.TEST_USER])
def test_read_ranges_batches_many_ranges_per_connection(
        server, ranges_file, connections, user):
    directory, (filename, data) = ranges_file
    src = ranges_checks.ssh_source(server, filename, [directory], user)
    ranges_checks.check_ranged_reads(src, data)
    # The probe, one connection for the 500 ranges, none for the refusals.
    assert len(connections) == 2
    # 5000 small ranges, none touching another: a dd each, in few
    # connections whose commands stay far below the 128 KiB limit.
    del connections[:]
    asked = [(offset, 512) for offset in range(0, 5000 * 2048, 2048)]
    asked.reverse()
    got = src.read_ranges(asked)
    assert got == [data[o:o + n] for o, n in asked]
    assert 2 <= len(connections) <= 4
    assert max(len(c) for c in connections) <= 64 * 1024
    assert not server.client_processes()


@pytest.mark.parametrize("user", ["root", sshd.TEST_USER])
def test_copy_around_skipped_ranges_in_one_connection(
        server, ranges_file, workdir, connections, user):
    directory, (filename, data) = ranges_file
    ranges_checks.check_skipping_copies(
        lambda: ranges_checks.ssh_source(server, filename, [directory], user),
        data, workdir, "ssh-%s" % user)
    # Per copy: the probe, then one connection streaming every range.
    assert len(connections) == 2 * 4
    assert sum("cs2os_dd" in c for c in connections) == 3
    assert not server.client_processes()


def test_ranged_read_of_a_changed_file_is_refused(server, workdir):
    directory = os.path.join(workdir, "ranges-ssh", "changing")
    filename, data = ranges_checks.make_file(directory)
    src = ranges_checks.ssh_source(server, filename, [directory])
    assert src.read_ranges([(0, 4)]) == [data[:4]]
    with open(filename, "r+b") as f:  # written to after the probe
        f.write(b"new!")
    os.utime(filename, ns=(1, 2))
    with pytest.raises(exception.SourceUnreadable,
                       match="changed while it was read"):
        src.read_ranges([(0, 4)])
    os.truncate(filename, 1000)  # and then it shrank
    with pytest.raises(exception.SourceUnreadable,
                       match="0 bytes arrived, 4 expected"):
        src.read_ranges([(len(data) - 4, 4)])
