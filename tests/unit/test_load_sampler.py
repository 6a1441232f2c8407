"""tools/load_sampler.py books each process's CPU to the group of the
program it runs, never by a word somewhere in its arguments."""

from tools import load_sampler


def _group(cmdline):
    return load_sampler.group_of(cmdline.split())


def test_minicloud_services_with_cs2os_paths_are_not_cs2os():
    # Issue 17's first bench run booked these to cs2os: each names a
    # path under /var/lib/cs2os-minicloud.
    conf = "/var/lib/cs2os-minicloud/ceph/ceph.conf"
    assert _group("ceph-mon -d -c %s -i a" % conf) == "ceph"
    assert _group("ceph-osd -d -c %s -i 0" % conf) == "ceph"
    assert _group("/usr/sbin/mariadbd --no-defaults "
                  "--datadir=/var/lib/cs2os-minicloud/mysql/data") == \
        "database"
    assert _group("/usr/sbin/ovs-vswitchd "
                  "unix:/var/lib/cs2os-minicloud/ovs/run/db.sock") == \
        "open vswitch"
    assert _group("/usr/lib/postgresql/15/bin/postgres "
                  "-D /var/lib/cs2os-minicloud/pg/data") == "database"
    assert _group("/usr/sbin/sshd -D -e -f "
                  "/var/tmp/cs2os-bench-1/sshd/sshd_config") == "other"


def test_cs2os_services_are_cs2os():
    assert _group("/work/main/.tox/bench-plan/bin/python -m "
                  "cs2os_agent.cmd.conductor --config-file /x.conf") == \
        "cs2os"
    assert _group("/usr/bin/python3 -W ignore -m cs2os_agent.cmd.agent") == \
        "cs2os"
    assert _group("/usr/local/bin/cs2os-api --config-file /etc/a.conf") == \
        "cs2os"


def test_retitled_and_interpreted_programs():
    # setproctitle puts the whole title into argv[0].
    assert load_sampler.group_of([
        "nova-conductor: master process [/opt/venv/bin/nova-conductor "
        "--config-file /var/lib/cs2os-minicloud/etc/nova/nova.conf]"]) == \
        "nova"
    assert _group("/opt/venv/bin/python /work/main/tools/minicloud/"
                  "nova_compute.py --config-file /var/lib/cs2os-minicloud/"
                  "etc/nova/nova-cpu.conf") == "nova"
    assert _group("/usr/bin/env LC_ALL=C qemu-img info /var/tmp/cs2os-x/d") \
        == "qemu-img"
    assert _group("/work/main/.tox/bench-plan/bin/python "
                  "tools/bench_plan.py --vms 3") == \
        "benchmark (CloudStack stand-in, polling)"
    assert _group(".tox/ci/bin/python -m pytest -q tests/unit") == \
        "other tests (pytest)"
    assert _group("/usr/bin/python3 /tmp/some_script.py") == \
        "tests/other python"
    assert load_sampler.group_of([]) == "other"
