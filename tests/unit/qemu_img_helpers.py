"""What the qemu_img unit tests share: ``_run`` patched, its failures.

A test module asks for the ``run`` fixture by importing ``run_fixture``
(tests/unit/test_qemu_img.py, tests/unit/test_qemu_img_limits.py).
"""

import json
from unittest import mock

import pytest
from oslo_concurrency import processutils

from cs2os_agent import qemu_img

LIMITS = qemu_img.QEMU_IMG_LIMITS
GiB = 1024**3
MiB = 1024**2


@pytest.fixture(name="run")
def run_fixture():
    with mock.patch.object(qemu_img, "_run", autospec=True) as m:
        m.return_value = ""
        yield m


def fail(exit_code, stdout="", stderr=""):
    return processutils.ProcessExecutionError(
        exit_code=exit_code, stdout=stdout, stderr=stderr
    )


def sized(*sizes_then_result):
    """``_run`` answers: qemu-img info of each image, then the command."""
    *sizes, result = sizes_then_result
    return [json.dumps({"virtual-size": n}) for n in sizes] + [result]
