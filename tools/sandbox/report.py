"""The sandbox's closing report: what the migration did, step by step,
and whether Nova's guest booted the migrated disk (its console says)."""

import datetime
import os
import time


def _when(stamp):
    return datetime.datetime.fromisoformat(stamp)


def report(minicloud, cloudstack, state_dir, migration, conn):
    """Print what the migration did; True if the server runs and its
    guest printed the message of the migrated disk."""
    print()
    print("=" * 72)
    resources, result = migration["resources"], migration["result"]
    server = conn.compute.get_server(resources["server_id"])
    print("CloudStack VM %s (%s) is now Nova server %s" % (
        cloudstack["vm_name"], cloudstack["vm_id"], server.id))
    print("  status %s on compute host %s, flavor %s, image %s" % (
        server.status, server.compute_host, resources.get("flavor_name"),
        resources.get("image_id")))
    disk = os.path.join(minicloud["instances_path"], server.id, "disk")
    print("  root disk %s" % disk)
    copied = result.get("sync", {}).get("bytes_copied",
                                        migration["bytes_done"])
    overlay = os.path.getsize(cloudstack["overlay"])
    print("  bytes moved: %d (%.1f MiB) of a %.1f MiB overlay file; the "
          "template went to Glance: %s bytes" % (
              copied, copied / 2**20, overlay / 2**20,
              result.get("template_bytes_moved", "?")))
    for nic in result.get("nics", []):
        print("  NIC: CloudStack network %s -> Neutron network %s, port %s,"
              " MAC %s, IP %s (%s)" % (
                  nic["cloudstack_network"], nic["neutron_network"],
                  nic["port_id"], nic["mac"],
                  nic["ip"], "kept" if nic["ip_preserved"] else
                  "was %s" % nic["cloudstack_ip"]))
    print("time per step:")
    last = _when(migration["started_at"])
    for event in migration["events"]:
        if event["message"] != "done":
            continue
        now = _when(event["created_at"])
        print("  %-14s %6.1f s" % (event["step"],
                                   (now - last).total_seconds()))
        last = now
    total = _when(migration["finished_at"]) - _when(migration["started_at"])
    print("  %-14s %6.1f s" % ("total", total.total_seconds()))
    console = os.path.join(minicloud["instances_path"], server.id,
                           "console.log")
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline:
        if os.path.exists(console):
            with open(console, errors="replace") as f:
                seen = f.read()
            if cloudstack["guest_message"] in seen:
                break
        time.sleep(0.5)
    booted = cloudstack["guest_message"] in seen
    print("guest console (Nova's %s): %s" % (
        console, "printed %r: it booted from the migrated disk"
        % cloudstack["guest_message"] if booted else
        "did not print %r within 60 s" % cloudstack["guest_message"]))
    print("=" * 72)
    print("Look around: . %s/openrc; openstack cs2os migration list; "
          "openstack server show %s" % (state_dir, server.id))
    print("Tear down:   tools/sandbox.sh down")
    return server.status == "ACTIVE" and booted


def customer_view(minicloud, server_id, openstack_as_customer):
    """Print the customer's own `server list` and the server's ports; True
    if the migrated server is among the customer's servers."""
    answers = []
    for args in (("server", "list"), ("port", "list", "--server",
                                      server_id)):
        print("$ openstack --os-cloud %s %s    # the customer, a member of "
              "the project, not an admin" % (minicloud["demo_cloud"],
                                             " ".join(args)), flush=True)
        answers.append(openstack_as_customer(*args))
        print(answers[-1].stdout, end="")
    servers = answers[0]
    return servers.returncode == 0 and server_id in servers.stdout
