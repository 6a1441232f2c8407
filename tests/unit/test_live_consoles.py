"""tools/testbed/live_consoles: the counter guest's output across files
(polled by hand here, no thread)."""

import os

import pytest

from tools.testbed import live_consoles
from tools.testbed import live_guest


def _lines(first, count):
    return "".join("C=%08X\r\n" % n for n in range(first, first + count))


def _append(path, text):
    with open(path, "a") as f:
        f.write(text)


def test_counters_across_files_and_a_line_split_between_them(tmp_path):
    a, tmp_dir = str(tmp_path / "a.log"), tmp_path / "instance"
    tmp_dir.mkdir()
    _append(a, "\r\n%s\r\n" % live_guest.BANNER + _lines(1, 5) + "C=000")
    # What Nova's first boot left in console.log is not the guest's.
    _append(str(tmp_dir / "console.log"), "cs2os template x\r\nC=00000099\r\n")
    consoles = live_consoles.Consoles(a)
    consoles.poll()
    consoles.add_dir(str(tmp_dir))
    # The line A began, finished by the temporary domain (its CPU stopped
    # mid-line), then B's restore truncates console.log.
    _append(str(tmp_dir / "console.tmp.log"), "00006\r\n" + _lines(7, 3))
    consoles.poll()
    with open(str(tmp_dir / "console.log"), "w") as f:
        f.write(_lines(10, 4))
    consoles.poll()
    assert [v for _t, _p, v in consoles.counters()] == list(range(1, 14))
    paths = [os.path.basename(p) for _t, p, _v in consoles.counters()]
    assert paths == ["a.log"] * 5 + ["console.tmp.log"] * 4 + [
        "console.log"] * 4
    pauses = consoles.assert_continuous()
    assert len(pauses) == 12 and pauses[0][0] >= pauses[-1][0]
    assert consoles.last() == 13
    assert [(v, os.path.basename(b)) for _s, v, _a, b in
            consoles.switches()] == [(5, "console.tmp.log"),
                                     (9, "console.log")]
    assert consoles.describe().startswith(
        "counter 1..13; a.log -> console.tmp.log after C=5: ")


def test_a_jump_or_a_second_banner_is_a_reboot(tmp_path):
    a, b = str(tmp_path / "a.log"), str(tmp_path / "b.log")
    _append(a, _lines(1, 5))
    _append(b, "%s\r\n" % live_guest.BANNER + _lines(1, 3))
    consoles = live_consoles.Consoles(a, b)
    consoles.poll()
    with pytest.raises(AssertionError, match="jumps"):
        consoles.assert_continuous()
    c = str(tmp_path / "c.log")
    _append(c, _lines(1, 5) + "%s\r\n" % live_guest.BANNER)
    consoles = live_consoles.Consoles(c)
    consoles.poll()
    with pytest.raises(AssertionError):
        consoles.assert_continuous()
