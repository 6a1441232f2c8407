"""What the machine spends while a benchmark phase runs: CPU by process
group, disk busy time, from /proc (Linux only).

A background thread reads every process's CPU time once a second and sums
each one's increase into its group (by the program a process runs, see
group_of; processes that come and go between
two samples, such as short qemu-img runs, count from their first sample),
so a phase's figures say which shared resource bounds it: CPU (Nova's
boots, the guests, cs2os), the disk, or the bus (RabbitMQ).
"""

import os
import threading
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# First match wins: (group, words looked for in the program's name).
# Matched against the program alone (see program_of), never the whole
# command line: the minicloud's Ceph, MariaDB, Open vSwitch and the
# benchmark's sshd all take paths under /var/lib/cs2os-minicloud or
# /var/tmp/cs2os-bench-*, and a match on "cs2os-" anywhere in their
# arguments once booked their CPU to cs2os (issue 17's first run: "cs2os
# 45 CPU-s" for 12 migrations, of which cs2os's own processes used ~25).
GROUPS = (
    ("nova", ("nova-", "nova_compute")),
    ("qemu (guests)", ("qemu-system",)),
    ("qemu-img", ("qemu-img", "qemu-storage-daemon", "qemu-io")),
    ("cs2os", ("cs2os_agent", "cs2os-")),
    ("benchmark (CloudStack stand-in, polling)", ("bench_",)),
    ("rabbitmq (bus)", ("beam.smp", "rabbitmq", "erl_child_setup")),
    ("libvirt", ("libvirtd", "virtqemud", "virtlogd")),
    ("glance", ("glance",)),
    ("neutron", ("neutron",)),
    ("cinder", ("cinder",)),
    ("placement", ("placement",)),
    ("privsep helpers (nova, neutron)", ("privsep-helper",)),
    ("keystone/apache", ("keystone", "apache2", "httpd", "uwsgi")),
    ("ceph", ("ceph-",)),
    ("database", ("mysqld", "mariadbd", "postgres")),
    ("open vswitch", ("ovs-", "ovsdb-")),
    # Other sessions' test runs on the same machine: not the benchmark's
    # load, but it shares the 2 cores with it.
    ("other tests (pytest)", ("pytest",)),
    ("profilers", ("py-spy", "perf")),
    ("tests/other python", ("python",)),
)
# Interpreters whose program is their first argument (a script or -m).
_INTERPRETERS = ("python", "perl", "sh", "bash", "env")


def program_of(argv):
    """What ``argv`` (a /proc/<pid>/cmdline, split) runs, as one string:
    the executable's name, and for an interpreter its script or module
    (``python -m cs2os_agent.cmd.agent`` -> ``python cs2os_agent.cmd.agent``).
    A process that rewrote its title ("nova-conductor: master process
    [...]", "postgres: ...") is named by the title's first word."""
    if not argv or not argv[0]:
        return ""
    first = argv[0].split(" ", 1)[0] if " " in argv[0] else argv[0]
    words = [os.path.basename(first)]
    if words[0].startswith(_INTERPRETERS):
        rest = iter(argv[1:])
        for arg in rest:
            if arg == "-m":
                words.append(next(rest, ""))
                break
            if arg in ("-W", "-X", "-c"):
                next(rest, None)  # the option's value
                continue
            if not arg.startswith("-") and "=" not in arg:
                words.append(os.path.basename(arg))
                break
    return " ".join(words)


def group_of(argv):
    """The group of a process whose command line is ``argv``."""
    program = program_of(argv)
    for name, words in GROUPS:
        if any(word in program for word in words):
            return name
    return "other"


def _group(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    return group_of([a for a in argv if a] if argv else argv)


def _cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # utime and stime are fields 14 and 15 (1-based) of the whole line.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _machine_cpu():
    """(busy, total) jiffies of all CPUs."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def device_of(path):
    """The block device (name in /proc/diskstats) holding ``path``."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    name = os.path.basename(os.path.realpath(
        "/sys/dev/block/%d:%d" % (major, minor)))
    # A partition: its disk's busy time is what is shared.
    parent = os.path.realpath("/sys/class/block/%s/.." % name)
    if os.path.exists(os.path.join(parent, "stat")) and \
            os.path.basename(parent) != "block":
        return os.path.basename(parent)
    return name


def _disk(device):
    """(io ms, sectors written) of ``device``."""
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if fields[2] == device:
                return int(fields[12]), int(fields[9])
    raise LookupError("no block device %s in /proc/diskstats" % device)


class LoadSampler:
    """Start before a phase, stop after it; ``summary()`` then says what
    it cost."""

    def __init__(self, device, interval=1.0):
        self.device = device
        self.interval = interval
        self._stop = threading.Event()
        self._thread = None
        self._last = {}  # pid -> (group, cpu seconds at the last sample)
        self.by_group = {}

    def start(self):
        self._began = time.monotonic()
        self._cpu0 = _machine_cpu()
        self._disk0 = _disk(self.device)
        self._sample(first=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = time.monotonic() - self._began
        busy1, total1 = _machine_cpu()
        self.cpu_busy = (busy1 - self._cpu0[0]) / max(
            1, total1 - self._cpu0[1])
        io_ms, sectors = _disk(self.device)
        self.disk_busy = (io_ms - self._disk0[0]) / 1000.0 / self.seconds
        self.disk_written_mb = (sectors - self._disk0[1]) * 512 / 1e6

    def _loop(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self, first=False):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            seconds = _cpu_seconds(pid)
            if seconds is None:
                continue
            known = self._last.get(pid)
            if known is None:
                group = _group(pid)
                if group is None:
                    continue
                # A process already running when the phase began counts
                # from now; one born during it, from its start.
                known = (group, seconds if first else 0.0)
            group, before = known
            self.by_group[group] = self.by_group.get(group, 0.0) + max(
                0.0, seconds - before)
            self._last[pid] = (group, seconds)

    def summary(self, cpus):
        top = sorted(self.by_group.items(), key=lambda kv: -kv[1])[:8]
        return ("CPU busy %.0f%% of %d cores; CPU seconds by group: %s; "
                "disk %s busy %.0f%%, %.0f MB written" % (
                    100 * self.cpu_busy, cpus,
                    ", ".join("%s %.0f" % kv for kv in top if kv[1] >= 0.5),
                    self.device, 100 * self.disk_busy,
                    self.disk_written_mb))

    def per_item(self, group, count):
        """CPU seconds of ``group`` per one of ``count`` items (per
        migration, in the benchmarks)."""
        return self.by_group.get(group, 0.0) / max(1, count)

    def bound(self, cpus):
        """The shared resource this phase saturated, if any."""
        if self.cpu_busy >= 0.85:
            top = max(self.by_group.items(), key=lambda kv: kv[1])[0]
            return "CPU (%.0f%% busy; most: %s)" % (100 * self.cpu_busy, top)
        if self.disk_busy >= 0.8:
            return "disk (%.0f%% busy)" % (100 * self.disk_busy)
        bus = self.by_group.get("rabbitmq (bus)", 0.0) / self.seconds
        if bus >= 0.8:
            return "the bus (RabbitMQ %.0f%% of a core)" % (100 * bus)
        return ("none saturated (CPU %.0f%%, disk %.0f%%): the migrations "
                "wait on each other or on the scheduler" % (
                    100 * self.cpu_busy, 100 * self.disk_busy))
