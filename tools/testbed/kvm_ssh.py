"""The conductor's libvirt connection to the stand-in KVM host over
``qemu+ssh`` (the OpenSSH client), its host key checked against the test
sshd's known_hosts.

Why not ``qemu+libssh`` (warm_chain.libvirt_uri): with libvirt 9.0 (Debian
12) a reply of more than 4 KiB over the libssh transport arrives as two SSH
packets; libssh reads both from the socket but hands libvirt only the
first, so libvirt's client waits for the socket to turn readable again,
and it does not: the call stalls until the next keepalive (5.0 s for
every ``XMLDesc`` of a domain with data disks, measured).  When the
client's own keepalive timer (on the libvirt event loop thread) is what
ends the stall, it interrupts the waiting call's private GLib loop from
outside, which leaves that call's socket watch attached with a pointer
into a stack frame that has returned; the next call on the connection
dispatches it and the process segfaults in ``virNetClientIOEventFD``
(``data->client`` read from a dead frame).  The ssh transport talks to a
plain socket to the ``ssh`` process: nothing is buffered out of libvirt's
sight, the same ``XMLDesc`` takes 1 ms.

libvirt's ssh transport takes no known_hosts parameter: ``command`` names
a wrapper that runs ``ssh`` with the sshd's known_hosts and strict checks
(an unknown or changed host key is refused, no prompt).
"""

import os

WRAPPER = "kvm-ssh"


def write_wrapper(sshd):
    """The ``ssh`` wrapper for libvirt's ``command`` parameter."""
    path = os.path.join(os.path.dirname(sshd.known_hosts), WRAPPER)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                "exec ssh -o UserKnownHostsFile=%s "
                "-o GlobalKnownHostsFile=/dev/null "
                "-o StrictHostKeyChecking=yes -o BatchMode=yes \"$@\"\n"
                % sshd.known_hosts)
    os.chmod(path, 0o755)  # noqa: S103 - libvirt executes it
    return path


def libvirt_uri(sshd):
    """[cloudstack] kvm_libvirt_uri over qemu+ssh for the test sshd."""
    return ("qemu+ssh://root@{host}:%d/system?keyfile=%s&command=%s"
            % (sshd.port, sshd.client_key, write_wrapper(sshd)))


def use_ssh_transport(conductor, sshd):
    """Point a ConductorProcess (not started) at the KVM host over
    qemu+ssh: a later value of the option wins in oslo.config."""
    with open(conductor.conf_file, "a") as f:
        f.write("\n[cloudstack]\nkvm_libvirt_uri = %s\n"
                % libvirt_uri(sshd))
