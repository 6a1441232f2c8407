"""The test bed: real stand-ins and launchers that the tests, the sandbox
(tools/sandbox) and the benchmarks (tools/bench_*.py) share.

- the CloudStack management API stand-in and its KVM host: cloudstack_api
  (the WSGI app and server), cloudstack_handlers, cloudstack_model,
  cloudstack_owners (domains, projects, key pairs, security groups),
  cloudstack_signature, cloudstack_kvm (VMs as transient libvirt domains);
  wsgi_session (the app in-process, for unit tests);
- disk images laid out as CloudStack and Nova lay them out: images;
- private servers: sshd, nfsd (nfs-ganesha, rpcbind), mariadb, postgres;
- the cs2os services as processes: service (what they share),
  agent_process, conductor_process, api_process;
- the run's names and waits: harness; the warm chain's extras: warm_chain;
  the minicloud (a real OpenStack) as seen from here: minicloud;
- process: how every child above is started and stopped (by PID) and the
  one free_port().

Plain modules only, importing nothing from ``tests``: the pytest fixtures
and checks stay in the tests' conftest files (and tests/functional/checks.py).
"""
