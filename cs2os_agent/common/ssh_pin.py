"""``known_hosts=FILE`` for libvirt's ``qemu+ssh`` transport.

libvirt's ssh transport takes no known_hosts parameter (only libssh and
libssh2 do, and libvirt 9.0's libssh transport stalls and can crash the
conductor: kvmhost.py), and it starts its ``command`` with a cleared
environment.  So the file is written into a small wrapper, one per file, in
a directory private to this process: it runs OpenSSH trusting that file
alone, refusing an unknown or changed key, never prompting, whatever the
conductor user's ssh_config says.
"""

import atexit
import hashlib
import os
import shlex
import shutil
import tempfile
import threading

_LOCK = threading.Lock()
_DIR = []


def ssh_options(known_hosts):
    return ["-o", "UserKnownHostsFile=%s" % known_hosts,
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes"]


def command_for(known_hosts):
    """The path of an executable that runs ``ssh`` with ``known_hosts`` as
    its only trust (libvirt's ``command=``)."""
    name = "ssh-%s" % hashlib.sha256(known_hosts.encode()).hexdigest()[:16]
    with _LOCK:
        path = os.path.join(_private_dir(), name)
        if not os.path.exists(path):
            argv = ["ssh", *ssh_options(known_hosts)]
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write("#!/bin/sh\nexec %s \"$@\"\n"
                        % " ".join(shlex.quote(a) for a in argv))
            os.chmod(tmp, 0o700)
            os.replace(tmp, path)
    return path


def _private_dir():
    if not _DIR:
        path = tempfile.mkdtemp(prefix="cs2os-kvm-ssh-")  # mode 0700
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        _DIR.append(path)
    return _DIR[0]
