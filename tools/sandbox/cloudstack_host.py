#!/usr/bin/env python3
"""The sandbox's CloudStack: one KVM host with a running VM, and its API.

The VM is a transient KVM domain on CloudStack's NFS primary-storage layout
(<root>/mnt/<pool uuid>/<volume uuid>, a qcow2 overlay whose header names
/mnt/<pool uuid>/<template uuid>); the API is the project's CloudStack
stand-in (tools/testbed), signed requests and async jobs included.  Runs
until SIGTERM, then destroys the domains it started.  Writes
<state>/cloudstack.json when the VM is up (mode 0600: it holds the API
keys cs2os-conductor is configured with).
"""

import argparse
import json
import os
import signal
import threading

from cs2os_agent import virt
from tools.testbed import cloudstack_api
from tools.testbed import cloudstack_kvm
from tools.testbed import harness
from tools.testbed import images

MiB = images.MiB


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--vm-name", default="web-1")
    parser.add_argument("--written-mib", type=int, default=96,
                        help="MiB the VM has written into its root volume")
    parser.add_argument("--libvirt-uri", default="qemu:///system")
    parser.add_argument("--ip", default="10.0.0.50",
                        help="the VM's NIC on CloudStack network 'guest'")
    parser.add_argument("--mac", default="1e:00:5a:00:00:01")
    args = parser.parse_args()
    virt.init()  # libvirt's expected errors stay off the log

    root = os.path.join(args.state_dir, "cloudstack")
    os.makedirs(root, mode=0o755, exist_ok=True)
    volume = images.make_cloudstack_volume(
        root, 64 * MiB, 1024 * MiB,
        ((0xA1, 1 * MiB, 1 * MiB), (0xA2, 64 * MiB, args.written_mib * MiB)))
    kvm = cloudstack_kvm.LibvirtKVM(root, args.libvirt_uri, stop_grace=1.0)
    api = cloudstack_api.FakeCloudStack(kvm)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        account = api.add_account("admin")
        # The VM is a customer's: cs2os's [cloudstack] project_map moves it
        # into the customer's Keystone project.
        customer = api.add_account("webshop", admin=False)
        host = api.add_host(api.add_zone("sandbox-zone"), "kvm-1",
                            "127.0.0.1")
        offering = api.add_service_offering("tiny", cpunumber=1, memory=64)
        network = api.add_network(host.zone, "guest")
        vm = api.add_kvm_vm(args.vm_name, volume, customer, host,
                            offering=offering,
                            nics=[(network, args.ip, args.mac)])
        harness.wait_console(kvm.console(vm.instancename), volume.message)
        endpoint = api.serve()
        info = {
            "endpoint": endpoint,
            "api_key": account.apikey,
            "secret_key": account.secretkey,
            "vm_name": vm.name,
            "owner": "ROOT/%s" % customer.name,
            "vm_id": vm.id,
            "instance_name": vm.instancename,
            "console": kvm.console(vm.instancename),
            "guest_message": volume.message,
            "network": network.name,
            "nic": {"ip": args.ip, "mac": args.mac},
            "overlay": volume.overlay,
            "reference": volume.reference,
            "primary_storage_mount": os.path.join(root, "mnt"),
            "pid": os.getpid(),
        }
        path = os.path.join(args.state_dir, "cloudstack.json")
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f, indent=2)
        os.rename(path + ".tmp", path)
        print("CloudStack VM %s (%s) running; API at %s"
              % (vm.name, vm.id, endpoint), flush=True)
        stop.wait()
    finally:
        api.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
