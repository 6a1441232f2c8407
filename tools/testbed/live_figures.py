"""The live move's figures: guest pause and QEMU downtime, N runs, median.

    flock /tmp/cs2os-heavy.lock \
        .tox/ci/bin/python -m tools.testbed.live_figures [N]

Each run starts the counter guest as A (tools/testbed/live_guest),
defines B as Nova would, block-copies A's disk onto B's and pivots, then
moves A into B (cs2os_agent.agent.live.move).  Printed per run: the pause
the guest's console shows (A's last counter line -> B's first), QEMU's
downtime (A's query-migrate), the switch (migrate sent -> B running) and
the stream's size.  Everything made carries cs2os-ft-live-fig-<random>
and is removed afterwards.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid

import libvirt

from cs2os_agent import virt
from cs2os_agent.agent.live import move
from tools.testbed import live_guest


def one_run(conn, root):
    tag = "cs2os-ft-live-fig-%s" % uuid.uuid4().hex[:8]
    d = os.path.join(root, tag)
    os.makedirs(d, mode=0o755)
    a_disk = live_guest.make_disk(os.path.join(d, "a.qcow2"))
    b_disk = os.path.join(d, "disk")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", b_disk,
                    str(16 * live_guest.MiB)], check=True)
    a_con, b_con = os.path.join(d, "a.log"), os.path.join(d, "console.log")
    run_root = os.path.join(d, "run")
    os.makedirs(run_root, mode=0o755)
    watch = live_guest.SerialWatch(a_con, b_con)
    watch.start()
    doms = [conn.defineXML(live_guest.domain_b_xml(
        tag + "-b", str(uuid.uuid4()), b_disk, b_con))]
    try:
        doms.append(conn.createXML(live_guest.domain_a_xml(
            tag + "-a", str(uuid.uuid4()), a_disk, a_con), 0))
        a, b = doms[1], doms[0]
        watch.wait_counter(a_con, 100)  # a second of guest time
        live_guest.blockcopy_pivot(a, "vda", b_disk)
        result = move.move(conn, a, b, run_root)
        last_a = watch.counters(a_con)[-1]
        watch.wait_counter(b_con, last_a[1] + 10)
        first_b = watch.counters(b_con)[0]
        return ((first_b[0] - last_a[0]) * 1000, result.downtime_ms,
                result.switch_seconds * 1000, result.stream_bytes)
    finally:
        watch.stop()
        for dom in doms:
            live_guest.remove_domain(dom)
        shutil.rmtree(d, ignore_errors=True)


def main(argv):
    runs = int(argv[1]) if len(argv) > 1 else 5
    virt.init()
    conn = libvirt.open("qemu:///system")
    root = tempfile.mkdtemp(prefix="cs2os-ft-live-fig-", dir="/var/tmp")
    os.chmod(root, 0o755)  # noqa: S103 - QEMU's user reaches the disks
    rows = []
    try:
        for _ in range(runs):
            rows.append(one_run(conn, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        conn.close()
    print("cs2os live move (same host): 64 MiB counter guest, %d runs"
          % runs)
    print("          pause   QEMU downtime   switch   stream")
    for i, (pause, down, switch, size) in enumerate(rows, 1):
        print("run %d  %6.1f ms  %8s ms  %6.1f ms  %5.1f MiB"
              % (i, pause, down, switch, size / live_guest.MiB))
    print("median %6.1f ms  %8s ms  %6.1f ms"
          % (statistics.median(r[0] for r in rows),
             statistics.median(r[1] for r in rows),
             statistics.median(r[2] for r in rows)))


if __name__ == "__main__":
    main(sys.argv)
