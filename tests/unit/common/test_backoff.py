import itertools

from cs2os_agent.common import backoff


def test_quick_first_looks_then_the_cap():
    assert list(itertools.islice(backoff.delays(2), 6)) == \
        [0.25, 0.5, 1, 2, 2, 2]


def test_a_cap_below_the_first_look_wins():
    assert list(itertools.islice(backoff.delays(0.1), 3)) == [0.1] * 3
    assert list(itertools.islice(backoff.delays(0), 2)) == [0, 0]
