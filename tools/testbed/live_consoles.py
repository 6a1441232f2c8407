"""The counter guest's serial output across a live migration.

The guest (tools/testbed/live_guest) prints ``C=<counter>`` lines on its
serial port; during a live migration that output lands in A's console file
on the CloudStack KVM host, then the temporary domain's, then B's (Nova's
console.log, which B's restore truncates; after a rollback A's file again,
truncated as well).  :class:`Consoles` reads them all as they grow, so the
test can tell the guest never rebooted and how long it paused.
"""

import glob
import os
import re
import threading
import time

from tools.testbed import live_guest

_COUNTER = re.compile(r"C=([0-9A-F]{8})\r?\n")
# A file that no longer starts as it did was truncated and written again
# (longer already than what was read of it before).
HEAD = 64


class Consoles(threading.Thread):
    """Every 1 ms: what the guest printed since, in the files it may print
    to: ``paths``, and each *.log under the directories :meth:`add_dir`
    names (the agent's choice for the temporary domain, and Nova's
    console.log, which B's restore truncates).  ``chunks``: (monotonic
    time, path, text), in the order read; the guest runs in one place at a
    time, so their text joined is its serial output.  A file that
    shrinks, or no longer begins as it did, is read again from its
    start."""

    def __init__(self, *paths):
        super().__init__(name="live-consoles", daemon=True)
        self.paths = list(paths)
        self.dirs = []
        self.offsets = {p: 0 for p in paths}
        self.heads = {}  # path -> its first bytes as read: a rewrite shows
        self.chunks = []
        self._done = threading.Event()

    def add_dir(self, path):
        """Watch the *.log files of ``path`` from now on (what they hold
        already is skipped: Nova's first boot of its disk)."""
        for name in glob.glob(os.path.join(path, "*.log")):
            if name not in self.offsets:
                with open(name, "rb") as f:
                    data = f.read()
                self.offsets[name] = len(data)
                self.heads[name] = data[:HEAD]
        self.dirs = self.dirs + [path]

    def run(self):
        while not self._done.is_set():
            self.poll()
            time.sleep(0.001)

    def poll(self):
        for d in self.dirs:
            for name in glob.glob(os.path.join(d, "*.log")):
                self.offsets.setdefault(name, 0)
        for path in list(self.offsets):
            try:
                with open(path, "rb") as f:
                    head = self.heads.get(path, b"")
                    if os.fstat(f.fileno()).st_size < self.offsets[path] \
                            or f.read(len(head)) != head:
                        # Truncated and written again: a new writer.
                        self.offsets[path], self.heads[path] = 0, b""
                    f.seek(self.offsets[path])
                    data = f.read()
            except FileNotFoundError:
                continue
            if data:
                if len(self.heads.get(path, b"")) < HEAD:
                    self.heads[path] = (self.heads.get(path, b"")
                                        + data)[:HEAD]
                self.offsets[path] += len(data)
                self.chunks.append((time.monotonic(), path,
                                    data.decode("ascii", "replace")))

    def stop(self):
        self._done.set()
        self.join(5)
        self.poll()

    def text(self):
        return "".join(text for _when, _path, text in self.chunks)

    def counters(self):
        """[(time, path, counter)]: each counter line with the time its
        end was read."""
        out, text, ends = [], "", []
        for when, path, chunk in self.chunks:
            text += chunk
            ends.append((len(text), when, path))
        i = 0
        for m in _COUNTER.finditer(text):
            while ends[i][0] < m.end():
                i += 1
            out.append((ends[i][1], ends[i][2], int(m.group(1), 16)))
        return out

    def last(self):
        found = self.counters()
        return found[-1][2] if found else None

    def wait_beyond(self, value, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.last() or 0) > value:
                return self.last()
            time.sleep(0.01)
        raise AssertionError("no counter beyond %s in %d s (last output %r)"
                             % (value, timeout, self.text()[-200:]))

    def assert_continuous(self):
        """One run of counters, each the last + 1, and no boot banner
        after the first counter:
        the guest never rebooted.  Returns the pauses, longest first:
        [(seconds, counter before, path before, path after)]."""
        found = self.counters()
        values = [v for _t, _p, v in found]
        assert values == list(range(values[0], values[0] + len(values))), \
            "the counter jumps: %s" % _jumps(values)
        text = self.text()
        # A's boot, before its first counter, and nothing after.
        assert text.count(live_guest.BANNER) <= 1 and \
            text.find(live_guest.BANNER) < text.find("C="), text[-300:]
        pauses = [(b[0] - a[0], a[2], a[1], b[1])
                  for a, b in zip(found, found[1:], strict=False)]
        return sorted(pauses, reverse=True)


    def switches(self):
        """The pauses where the output moved to another file, in order:
        [(seconds, counter before, path before, path after)]."""
        found = self.counters()
        return [(b[0] - a[0], a[2], a[1], b[1])
                for a, b in zip(found, found[1:], strict=False)
                if a[1] != b[1]]

    def describe(self):
        """One line for the test's output: the counters, each switch of
        file with its pause, the longest pause."""
        found = self.counters()
        switches = ["%s -> %s after C=%d: %.1f ms" % (
            os.path.basename(a), os.path.basename(b), v, s * 1000)
            for s, v, a, b in self.switches()]
        longest = max((b[0] - a[0], a[2]) for a, b in zip(
            found, found[1:], strict=False))
        return "counter %d..%d; %s; longest pause %.1f ms after C=%d" % (
            found[0][2], found[-1][2], "; ".join(switches),
            longest[0] * 1000, longest[1])


def _jumps(values):
    pairs = zip(values, values[1:], strict=False)
    return [(a, b) for a, b in pairs if b != a + 1][:5]
