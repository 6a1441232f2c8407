import subprocess

import pytest

from tests.unit import conftest


def test_subprocess_is_refused():
    with pytest.raises(conftest.StrayProcessError):
        subprocess.run(["true"], check=False)


def test_cs2os_runs_on_the_threading_backend():
    from oslo_service import backend

    import cs2os_agent  # noqa: F401

    assert backend.get_backend_type() == backend.BackendType.THREADING
