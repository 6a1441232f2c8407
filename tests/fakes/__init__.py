"""Fakes for the unit tests (libvirt, a clock).  The real stand-ins that
the functional and end-to-end tests, the sandbox and the benchmarks share
(the CloudStack API and KVM host, sshd, nfsd, databases) are in
tools/testbed/."""
