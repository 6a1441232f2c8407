"""A live migration's record goes at its end, and only then."""

import os

from cs2os_agent.agent.live import state

MID = "0b7e4f36-1d52-4c55-9a43-8f0c3b7f1d20"


def _exists(run_dir):
    return os.path.exists(state.path(run_dir, MID))


def test_a_record_without_a_hop_goes(tmp_path):
    run_dir = str(tmp_path)
    state.update(run_dir, MID, hop_back={"hopped_back": True})
    assert state.forget(run_dir, MID) is True
    assert not _exists(run_dir)
    assert state.forget(run_dir, MID) is False  # again: nothing to do


def test_a_moved_guest_lets_the_record_go(tmp_path):
    run_dir = str(tmp_path)
    state.update(run_dir, MID, hop={"temp_name": "cs2os-live-x"},
                 move={"outcome": "running", "result": {}})
    assert state.forget(run_dir, MID) is True
    assert not _exists(run_dir)


def test_a_hop_not_undone_keeps_the_record(tmp_path):
    # The temporary domain may still hold the guest: the hop back needs
    # the record (A's name and disks on the KVM host).
    run_dir = str(tmp_path)
    for move in (None, {"outcome": "aborted"}, {"outcome": "failed"}):
        state.update(run_dir, MID, hop={"temp_name": "cs2os-live-x"},
                     move=move)
        assert state.forget(run_dir, MID) is False
        assert state.load(run_dir, MID)["hop"] == {"temp_name":
                                                   "cs2os-live-x"}


def test_another_migrations_record_is_left_alone(tmp_path):
    run_dir = str(tmp_path)
    state.update(run_dir, MID, hop_back={"hopped_back": True})
    assert state.forget(run_dir, "another-migration") is False
    assert _exists(run_dir)
