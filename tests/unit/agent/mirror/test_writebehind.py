"""The mirror target's periodic write-behind, with a recorded sync call."""

import os
import threading

from cs2os_agent.agent.mirror import writebehind
from cs2os_agent.transfer import partial


class RecordedSync:
    def __init__(self, fail_at=None):
        self.calls = []
        self.fail_at = fail_at
        self.enough = threading.Event()

    def __call__(self, fd, offset, nbytes, flags):
        self.calls.append((os.fstat(fd).st_ino, offset, nbytes, flags))
        if len(self.calls) >= 3:
            self.enough.set()
        return -1 if len(self.calls) == self.fail_at else 0


def test_starts_the_whole_files_write_back_until_stopped(tmp_path):
    path = tmp_path / "disk.cs2os-mirror"
    path.write_bytes(b"x" * 4096)
    sync = RecordedSync()
    wb = writebehind.PeriodicWriteBehind(str(path), interval=0.001,
                                         sync=sync).start()
    assert sync.enough.wait(10)
    wb.stop()
    count = len(sync.calls)
    # Offset 0 and length 0: the whole file as it is then; WRITE only
    # (starts the write-back, never waits for it).
    assert set(sync.calls) == {(path.stat().st_ino, 0, 0,
                                partial.SYNC_FILE_RANGE_WRITE)}
    assert wb.calls == count
    wb.stop()  # idempotent
    assert len(sync.calls) == count  # nothing after stop
    # Started again (a target prepared again): it runs again.
    sync.enough.clear()
    sync.calls.clear()
    wb.start()
    assert sync.enough.wait(10)
    wb.stop()


def test_a_failing_sync_ends_the_thread_not_the_mirror(tmp_path):
    path = tmp_path / "t"
    path.write_bytes(b"")
    sync = RecordedSync(fail_at=2)
    wb = writebehind.PeriodicWriteBehind(str(path), interval=0.001,
                                         sync=sync).start()
    wb._thread.join(10)
    assert not wb._thread.is_alive()
    assert len(sync.calls) == 2 and wb.calls == 1
    wb.stop()


def test_without_sync_file_range_nothing_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(partial, "sync_file_range", None)
    wb = writebehind.PeriodicWriteBehind(str(tmp_path / "absent"))
    assert wb.start() is wb and wb._thread is None
    wb.stop()


def test_stop_before_start_is_harmless(tmp_path):
    writebehind.PeriodicWriteBehind(str(tmp_path / "t")).stop()
