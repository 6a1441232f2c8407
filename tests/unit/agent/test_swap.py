import os

import pytest

from cs2os_agent.agent import layout
from cs2os_agent.agent import swap
from cs2os_agent.common import exception


@pytest.fixture
def files(tmp_path):
    f = layout.InstanceFiles(str(tmp_path))
    with open(f.disk, "w") as d:
        d.write("nova")
    os.chmod(f.disk, 0o644)
    return f


def stage(files, content="migrated"):
    with open(files.staged, "w") as s:
        s.write(content)
    os.chmod(files.staged, 0o600)


def read(p):
    with open(p) as f:
        return f.read()


def test_swap_keeps_original_and_its_mode(files):
    stage(files)
    assert swap.swap_in(files, "u") == {"swapped": True}
    assert read(files.disk) == "migrated"
    assert read(files.orig) == "nova"
    assert os.stat(files.disk).st_mode & 0o777 == 0o644
    assert not os.path.exists(files.staged)


def test_swap_twice_is_a_no_op(files):
    stage(files)
    swap.swap_in(files, "u")
    assert swap.swap_in(files, "u") == {"swapped": False}
    assert read(files.disk) == "migrated"


def test_swap_resumes_after_a_crash_between_link_and_rename(files):
    stage(files)
    os.link(files.disk, files.orig)  # the first step, then "crash"
    assert swap.swap_in(files, "u") == {"swapped": True}
    assert (read(files.disk), read(files.orig)) == ("migrated", "nova")


def test_swap_without_staged(files):
    with pytest.raises(exception.NothingStaged):
        swap.swap_in(files, "u")
    assert read(files.disk) == "nova"


def test_second_swap_never_overwrites_the_original(files):
    stage(files, "first")
    swap.swap_in(files, "u")
    stage(files, "second")
    swap.swap_in(files, "u")
    assert (read(files.disk), read(files.orig)) == ("second", "nova")


def test_restore_puts_nova_disk_back_and_keeps_migrated(files):
    stage(files)
    swap.swap_in(files, "u")
    assert swap.restore(files, "u") == {"restored": True}
    assert read(files.disk) == "nova"
    assert read(files.staged) == "migrated"
    assert not os.path.exists(files.orig)
    assert swap.restore(files, "u") == {"restored": False}


def test_restore_resumes_after_a_crash_between_link_and_rename(files):
    stage(files)
    swap.swap_in(files, "u")
    os.link(files.disk, files.staged)  # restore's first step, then "crash"
    assert swap.restore(files, "u") == {"restored": True}
    assert (read(files.disk), read(files.staged)) == ("nova", "migrated")


def test_restore_before_any_swap_is_a_no_op(files):
    assert swap.restore(files, "u") == {"restored": False}
    assert read(files.disk) == "nova"


def test_cleanup_removes_only_ours(files):
    stage(files)
    swap.swap_in(files, "u")
    for p in (files.partial, files.staged_meta):
        open(p, "w").close()
    other = os.path.join(files.instance_dir, "console.log")
    open(other, "w").close()
    removed = swap.cleanup(files)["removed"]
    assert sorted(removed) == sorted(
        [files.orig, files.partial, files.staged_meta])
    assert sorted(os.listdir(files.instance_dir)) == ["console.log", "disk"]
    assert read(files.disk) == "migrated"
