"""A clock for tests: time passes only when the test or a sleep moves it.

Code that waits takes its clock and its sleep as arguments (``clock=`` and
``sleep=``, defaulting to :func:`time.monotonic` and :func:`time.sleep`);
a test hands it ``clock.monotonic`` (or the clock itself: it is callable)
and ``clock.sleep``.  A sleep returns at once and moves the clock on by
what was asked, so a run that waits minutes takes no time and every
figure it prints is exact.
"""


class FakeClock:
    """``now`` seconds; ``sleeps`` lists every sleep asked for, in order.

    It starts at 1000 s, not 0: code that mistook a time for a duration
    would then show it.
    """

    def __init__(self, now=1000.0):
        self.now = now
        self.sleeps = []

    def monotonic(self):
        return self.now

    def time(self):
        return self.now

    __call__ = monotonic

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
