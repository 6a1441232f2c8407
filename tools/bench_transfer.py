#!/usr/bin/env python3
"""Benchmark: the agent's sync_overlay against the raw transport, same run.

Builds a CloudStack-like overlay (default 1 GiB virtual, 600 MiB of random
data allocated) on a template, a Nova-like instance to adopt it, and a real
cs2os-agent process on RabbitMQ.  For each transport and each run it times
the raw baseline (``cp`` for path, ``ssh host cat > file`` for ssh,
``nfs-cp`` for nfs) and the agent's ``sync_overlay`` into the same
directory, alternating which goes first, and prints medians: MB/s of both,
their ratio, bytes moved against the overlay's allocated bytes, and the
agent's peak RSS.  Both read the overlay from the page cache (it is read
once before the first run), so the figures compare the copy mechanisms,
not the disk.

It also prints each run, and the "durable" ceiling: about how close to the
bare baseline any copy that is on disk when it returns can get on this
disk (the baseline's own fsync time bounds it).  ``--transfer-option
NAME=VALUE`` passes a [transfer] option to the agent, to compare
mechanisms (e.g. ``nfs_connections=1``) in the same set-up.

Needs root, libvirtd and RabbitMQ (tools/test-services.sh start) and the
transports' servers, which it starts itself.  Not a test: it asserts
nothing; it prints the figures and the targets next to them.
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import libvirt

from cs2os_agent import qemu_img
from cs2os_agent import virt
from cs2os_agent.agent import rpcapi
from cs2os_agent.common import context
from cs2os_agent.common import rpc
from cs2os_agent.transfer import sshcmd

# The test bed comes from the checkout: tox sets PYTHONPATH, a plain
# ``python tools/bench_transfer.py`` from the repository root does not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.testbed import agent_process  # noqa: E402
from tools.testbed import images  # noqa: E402
from tools.testbed import nfsd  # noqa: E402
from tools.testbed import service  # noqa: E402
from tools.testbed import sshd  # noqa: E402

MiB = images.MiB


def make_overlay(root, virtual_mib, allocated_mib):
    """A CloudStack volume whose overlay holds ``allocated_mib`` of random
    data (incompressible, so no transport can cheat) past the template."""
    vol = images.make_cloudstack_volume(
        root, template_size=virtual_mib * MiB, writes=())
    random_file = os.path.join(root, "random.bin")
    with open(random_file, "wb") as f:
        for _ in range(allocated_mib // 8):
            f.write(os.urandom(8 * MiB))
    spec = {"driver": "qcow2",
            "file": {"driver": "file", "filename": vol.overlay},
            "backing": None}
    # Whole clusters only, so the missing backing file is never read.
    images.run("qemu-io", "-c", "write -s %s %d %d"
               % (random_file, 64 * MiB, allocated_mib // 8 * 8 * MiB),
               "json:" + json.dumps(spec))
    os.unlink(random_file)
    # The guest's view again (A on the real B), for qemu-img map.
    shutil.copyfile(vol.overlay, vol.reference)
    images.run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", vol.template,
               "-F", "qcow2", vol.reference)
    return vol


def read_once(path):
    with open(path, "rb") as f:
        while f.read(8 * MiB):
            pass


def peak_rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PathTransport:
    name = "path"
    baseline_name = "cp"

    def __init__(self, work, vol):
        self.vol = vol

    def agent_options(self):
        return {}

    def source(self):
        return {"transport": "path", "path": self.vol.overlay}

    def baseline(self, dest):
        subprocess.run(["cp", self.vol.overlay, dest], check=True)

    def stop(self):
        pass


class SshTransport:
    """A private sshd on 127.0.0.1 plays the CloudStack KVM host."""

    name = "ssh"
    baseline_name = "ssh cat>f"

    def __init__(self, work, vol):
        self.vol = vol
        self.server = sshd.Server(work).start()

    def agent_options(self):
        return {"ssh_private_key_file": self.server.client_key,
                "ssh_known_hosts_file": self.server.known_hosts,
                "remote_source_roots": os.path.dirname(self.vol.pool_dir)}

    def source(self):
        return {"transport": "ssh", "host": "127.0.0.1",
                "port": self.server.port, "path": self.vol.overlay}

    def baseline(self, dest):
        # The same ssh command line (cipher included) the agent runs.
        options = sshcmd.SshOptions(self.server.client_key,
                                    self.server.known_hosts, 10, 60, 1 << 20)
        target = sshcmd.SshTarget("127.0.0.1", self.server.port, "root",
                                  self.vol.overlay)
        argv = sshcmd.build_argv(target, options,
                                 "cat -- %s" % shlex.quote(self.vol.overlay))
        with open(dest, "wb") as f:
            subprocess.run(argv, stdout=f, check=True)

    def stop(self):
        self.server.stop()


class NfsTransport:
    """nfs-ganesha (user space) on 127.0.0.1 exports the pool dirs (v4)."""

    name = "nfs"
    baseline_name = "nfs-cp"
    pseudo = "/primary"

    def __init__(self, work, vol):
        self.vol = vol
        self.server = nfsd.Ganesha(
            work, "bench-ganesha", os.path.dirname(vol.pool_dir),
            pseudo=self.pseudo, protocols="4")
        self.server.start("127.0.0.1", 4)

    def _relative(self):
        return os.path.relpath(self.vol.overlay,
                               os.path.dirname(self.vol.pool_dir))

    def agent_options(self):
        return {"nfs_port": self.server.port}

    def source(self):
        return {"transport": "nfs", "server": "127.0.0.1",
                "export": self.pseudo, "path": self._relative()}

    def baseline(self, dest):
        url = "nfs://127.0.0.1%s/%s?version=4&nfsport=%d" % (
            self.pseudo, self._relative(), self.server.port)
        subprocess.run(["nfs-cp", url, dest], check=True,
                       stdout=subprocess.DEVNULL)

    def stop(self):
        self.server.stop()


TRANSPORTS = {"path": PathTransport, "ssh": SshTransport,
              "nfs": NfsTransport}


def timed(fn, *args):
    # Dirty pages of the previous step would otherwise be written back
    # during this one and charge its time.
    os.sync()
    started = time.monotonic()
    result = fn(*args)
    return time.monotonic() - started, result


def bench_transport(cls, args, work, vol, inst, api, ctxt, exchange, url,
                    roots):
    transport = cls(work, vol)
    agent = agent_process.AgentProcess(
        work, "bench-%s-%s" % (transport.name, uuid.uuid4().hex[:6]), url,
        exchange, os.path.dirname(inst.instance_dir), roots,
        # The shipped checkpoint interval, not the tests' small one.
        transfer_options=dict(transport.agent_options(), checkpoint_mib=256)
        | args.transfer_option)
    try:
        agent.start(api, ctxt)
        allocated = qemu_img.allocated_bytes(vol.reference, "qcow2")
        rows = []
        dest = os.path.join(inst.instance_dir, "baseline.copy")
        for run in range(args.runs):

            def agent_run():
                os.sync()
                migration = "bench-%s" % uuid.uuid4().hex[:8]
                result = api.sync_overlay(ctxt, agent.host, migration,
                                          inst.uuid, transport.source())
                api.cleanup(ctxt, agent.host, migration, inst.uuid)
                return result

            def baseline_run():
                seconds, _ = timed(transport.baseline, dest)
                # The agent's copy is durable before it returns; the same
                # copy made durable is the like-for-like baseline.
                started = time.monotonic()
                fd = os.open(dest, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
                durable = seconds + time.monotonic() - started
                moved = os.path.getsize(dest)
                os.unlink(dest)
                return seconds, durable, moved

            if run % 2:
                base_s, durable_s, base_bytes = baseline_run()
                result = agent_run()
            else:
                result = agent_run()
                base_s, durable_s, base_bytes = baseline_run()
            rows.append({
                "baseline_mbs": base_bytes / base_s / 1e6,
                "durable_baseline_mbs": base_bytes / durable_s / 1e6,
                "copy_mbs": result["bytes_copied"] / result["copy_seconds"]
                / 1e6,
                "sync_mbs": result["bytes_copied"] / result["seconds"] / 1e6,
                "bytes_moved": result["bytes_copied"],
                # The disk alone took durable_s - base_s to take the copy
                # (the fsync after the baseline): a durable copy, however
                # well it overlaps writing with reading, needs about as
                # long, so this is about the best copy/b it can reach.  An
                # estimate: the shared disk's speed varies by the second.
                "ceiling": base_s / max(base_s, durable_s - base_s),
            })
            print("    run %d: base %.0f, base+fs %.0f, copy %.0f, sync %.0f "
                  "MB/s" % (run + 1, rows[-1]["baseline_mbs"],
                            rows[-1]["durable_baseline_mbs"],
                            rows[-1]["copy_mbs"], rows[-1]["sync_mbs"]),
                  flush=True)
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        med.update(
            transport=transport.name,
            baseline=transport.baseline_name,
            ratio_copy=med["copy_mbs"] / med["baseline_mbs"],
            ratio_copy_durable=med["copy_mbs"] / med["durable_baseline_mbs"],
            ratio_sync=med["sync_mbs"] / med["baseline_mbs"],
            allocated=allocated,
            moved_vs_allocated=med["bytes_moved"] / allocated,
            peak_rss_mib=peak_rss_mib(agent.proc.pid),
            runs=args.runs,
        )
        return med
    finally:
        agent.stop()
        transport.stop()


def print_table(results, args):
    print("\ncs2os transfer benchmark: %d GiB virtual, %d MiB allocated, "
          "medians of %d runs, %s, %d cores"
          % (args.virtual_gib, args.allocated_mib, args.runs,
             os.uname().machine, os.cpu_count()))
    print("%-5s %-10s %6s %7s %6s %6s %6s %7s %6s %7s %11s %9s" % (
        "", "baseline", "base", "base+fs", "copy", "sync", "copy/b",
        "copy/bf", "sync/b", "durable", "moved/alloc", "peak RSS"))
    for r in results:
        print("%-5s %-10s %6.0f %7.0f %6.0f %6.0f %6.2f %7.2f %6.2f %7.2f "
              "%11.4f %5.0f MiB" % (
                  r["transport"], r["baseline"], r["baseline_mbs"],
                  r["durable_baseline_mbs"], r["copy_mbs"], r["sync_mbs"],
                  r["ratio_copy"], r["ratio_copy_durable"], r["ratio_sync"],
                  r["ceiling"], r["moved_vs_allocated"], r["peak_rss_mib"]))
    print("MB/s.  base = the raw transport into a file; base+fs = the same "
          "then fsync (the agent's copy is durable when it returns); copy = "
          "the agent's data path; sync = the whole sync_overlay call (copy, "
          "rebase, check, resize, verify).  copy/b, copy/bf, sync/b: "
          "ratios.  durable = about the best copy/b a durable copy can "
          "reach on this disk: base time / the baseline's fsync time (the "
          "disk alone took that long to write the bytes), capped at 1.  "
          "Targets: copy/baseline >= 0.90, moved/allocated <= 1.01, peak "
          "RSS < 150 MiB.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--virtual-gib", type=int, default=1)
    parser.add_argument("--allocated-mib", type=int, default=600)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    parser.add_argument("--transport-url",
                        default="rabbit://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--transfer-option", action="append", default=[],
        metavar="NAME=VALUE",
        help="a [transfer] option for the agent, e.g. nfs_connections=1 "
        "(repeatable), to compare mechanisms in the same set-up")
    args = parser.parse_args()
    try:
        args.transfer_option = dict(
            o.split("=", 1) for o in args.transfer_option)
    except ValueError:
        parser.error("--transfer-option takes NAME=VALUE")
    unknown = set(args.transports.split(",")) - set(TRANSPORTS)
    if unknown:
        parser.error("unknown transports: %s" % ", ".join(sorted(unknown)))

    run_id = uuid.uuid4().hex[:8]
    work = tempfile.mkdtemp(prefix="cs2os-bench-%s-" % run_id, dir="/var/tmp")
    os.chmod(work, 0o755)  # noqa: S103 - qemu runs as libvirt-qemu
    virt.init()  # libvirt's expected errors stay off stderr
    conn = libvirt.open("qemu:///system")
    dom = None
    try:
        cs_root = os.path.join(work, "cloudstack")
        vol = make_overlay(cs_root, args.virtual_gib * 1024,
                           args.allocated_mib)
        read_once(vol.overlay)
        instances = os.path.join(work, "instances")
        inst = images.make_nova_instance(
            instances, vol.template, args.virtual_gib * 1024 * MiB,
            "cs2os-bench-%s" % run_id)
        dom = conn.defineXML(inst.domain_xml())

        exchange = "cs2os-bench-%s" % run_id
        service.init_rpc_client(work, args.transport_url, exchange)
        api = rpcapi.AgentAPI()
        ctxt = context.get_admin_context()
        results = []
        for name in args.transports.split(","):
            print("==> %s" % name, flush=True)
            results.append(bench_transport(
                TRANSPORTS[name], args, work, vol, inst, api, ctxt,
                exchange, args.transport_url,
                [os.path.join(cs_root, "mnt")]))
        print_table(results, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        return 0
    finally:
        rpc.cleanup()
        if dom is not None:
            dom.undefine()
        conn.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
