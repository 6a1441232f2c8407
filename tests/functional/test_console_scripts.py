"""Every cs2os console script starts quietly.

An operator reads these commands' output (``cs2os-status upgrade check``
in an upgrade procedure, a service's first lines in the journal): a
warning from a library cs2os imports without using it reads like a fault.
Run as installed (the scripts beside this Python), ``--help`` only.
"""

import configparser
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _console_scripts():
    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    lines = setup["options.entry_points"]["console_scripts"].splitlines()
    return [line.split("=")[0].strip() for line in lines if "=" in line]


@pytest.mark.parametrize("script", _console_scripts())
def test_help_prints_no_warning(script):
    path = os.path.join(os.path.dirname(sys.executable), script)
    assert os.access(path, os.X_OK), "%s is not installed beside %s" % (
        script, sys.executable)
    done = subprocess.run([path, "--help"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert done.stderr == ""
