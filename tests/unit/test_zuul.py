""".zuul.yaml against the DevStack plugin it enables.

Zuul cannot run here; what can drift is the job's view of the plugin: its
name, the services it enables, the localrc variables it sets.  These are
read from devstack/ itself.
"""

import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DEVSTACK = os.path.join(ROOT, "devstack")


def _read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def _zuul():
    config = yaml.safe_load(_read(".zuul.yaml"))
    assert isinstance(config, list), ".zuul.yaml: a list of stanzas"
    jobs = {item["job"]["name"]: item["job"] for item in config
            if "job" in item}
    projects = [item["project"] for item in config if "project" in item]
    assert len(projects) == 1, "one project stanza"
    return jobs, projects[0]


def _job_vars(jobs, name):
    """A job's vars, its parents' merged beneath (as Zuul merges dicts)."""
    job = jobs[name]
    merged = {}
    if job.get("parent") in jobs:
        merged = _job_vars(jobs, job["parent"])
    for key, value in job.get("vars", {}).items():
        if isinstance(value, dict):
            merged[key] = dict(merged.get(key, {}), **value)
        else:
            merged[key] = value
    return merged


def _plugin_shell():
    return "\n".join(_read("devstack", *name) for name in (
        ("settings",), ("plugin.sh",), ("lib", "cs2os")))


def _plugin_services():
    """Every service name the plugin enables or asks about."""
    names = set()
    for args in re.findall(r"(?:enable_service|is_service_enabled)"
                           r"((?:[ \t]+[\w-]+)+)", _plugin_shell()):
        names.update(a for a in args.split() if a.startswith("cs2os-"))
    return names


def _settable_variables():
    """Variables devstack/settings takes from localrc: NAME=${NAME:-...}
    or $(trueorfalse DEFAULT NAME)."""
    settings = _read("devstack", "settings")
    names = set(re.findall(r"^(\w+)=\$\{\1:-", settings, re.M))
    names.update(re.findall(r"^(\w+)=\$\(trueorfalse \w+ \1\)", settings,
                            re.M))
    return names


def _devstack_jobs(jobs):
    return [name for name in jobs
            if "cs2os" in _job_vars(jobs, name).get("devstack_plugins", {})]


def test_a_devstack_job_enables_the_plugin_by_its_name():
    jobs, _ = _zuul()
    names = _devstack_jobs(jobs)
    assert "cs2os-devstack" in names
    plugin = re.search(r"^define_plugin (\S+)$", _read("devstack", "settings"),
                       re.M).group(1)
    job = jobs["cs2os-devstack"]
    assert job["parent"] in ("devstack", "devstack-tempest")
    assert _job_vars(jobs, "cs2os-devstack")["devstack_plugins"] == {
        plugin: "https://opendev.org/x/cs2os"}
    assert {"openstack/devstack", "openstack/nova", "x/cs2os"} <= set(
        job["required-projects"])


def test_the_services_it_enables_are_the_plugins():
    jobs, _ = _zuul()
    known = _plugin_services()
    assert known == {"cs2os-api", "cs2os-cond", "cs2os-agent"}
    for name in _devstack_jobs(jobs):
        services = _job_vars(jobs, name)["devstack_services"]
        ours = {s for s, on in services.items() if s.startswith("cs2os")}
        assert ours <= known, (name, ours - known)
        assert {s for s in ours if services[s] is True} == known, name


def test_every_localrc_variable_is_one_the_plugin_reads():
    jobs, _ = _zuul()
    settable = _settable_variables()
    # The parse sees what it should: a few the plugin is known to read.
    assert {"CS2OS_USE_UWSGI", "CS2OS_CLOUDSTACK_ENDPOINT",
            "CS2OS_OVERLAY_TRANSPORT"} <= settable
    assert "CS2OS_UWSGI_CONF" not in settable
    for name in _devstack_jobs(jobs):
        localrc = _job_vars(jobs, name).get("devstack_localrc", {})
        assert localrc, name
        unknown = set(localrc) - settable
        assert not unknown, (name, unknown)


def test_check_and_gate_run_the_devstack_job():
    jobs, project = _zuul()
    for pipeline in ("check", "gate"):
        names = [j if isinstance(j, str) else next(iter(j))
                 for j in project[pipeline]["jobs"]]
        assert "cs2os-devstack" in names, pipeline
        for job in names:
            # Ours are defined here; the others are OpenDev's.
            assert job in jobs or job.startswith("openstack-tox-"), job


def test_check_and_gate_keep_the_lower_bounds_true():
    jobs, project = _zuul()
    envs = {name for name, job in jobs.items()
            if job.get("vars", {}).get("tox_envlist") == "lower-constraints"}
    assert envs, "no job runs tox -e lower-constraints"
    assert "[testenv:lower-constraints]" in _read("tox.ini")
    for pipeline in ("check", "gate"):
        names = [j if isinstance(j, str) else next(iter(j))
                 for j in project[pipeline]["jobs"]]
        assert envs & set(names), pipeline
