"""Unit tests run no external process: a stray one fails the test.

Modelled on ironic-python-agent's unit test base.  A test that means to
exercise a command patches the one function that runs it (for example
``cs2os_agent.qemu_img._run``).
"""

import subprocess

import pytest

from cs2os_agent.db import api
from cs2os_agent.db import migration


class StrayProcessError(AssertionError):
    pass


def _refuse(*args, **kwargs):
    raise StrayProcessError(
        "unit test tried to run a process: %r" % (args[:1] or kwargs,)
    )


@pytest.fixture(autouse=True)
def no_stray_processes(monkeypatch):
    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse)
    monkeypatch.setattr("os.system", _refuse)
    monkeypatch.setattr("os.posix_spawn", _refuse)
    monkeypatch.setattr("os.posix_spawnp", _refuse)
    monkeypatch.setattr("os.execv", _refuse)
    monkeypatch.setattr("os.execve", _refuse)


@pytest.fixture
def db(tmp_path):
    """The conductor's database, migrated to head, on a real SQLite file."""
    database = api.Database("sqlite:///%s" % (tmp_path / "cs2os.sqlite"))
    migration.upgrade(database)
    return database
