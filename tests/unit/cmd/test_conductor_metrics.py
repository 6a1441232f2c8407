"""cs2os-conductor's start of its metrics endpoint: what it does with a
bad [conductor] metrics_listen or an address it cannot bind (no socket
here: tests/functional/test_metrics.py binds a real one)."""

import errno
import logging

import pytest

from cs2os_agent.cmd import conductor as cmd
from cs2os_agent.conductor import metrics


class Engine:
    workers = 2

    def busy(self):
        return 0


@pytest.fixture
def use(make_config, monkeypatch):
    def use_(text):
        monkeypatch.setattr(cmd, "CONF", make_config(text))
    return use_


def test_off_by_default(use):
    use("")
    assert cmd._start_metrics(object(), Engine()) is None


@pytest.mark.parametrize("value", ["bogus", "::1:9797", "127.0.0.1:70000"])
def test_a_bad_address_stops_the_start(use, caplog, value):
    use("[conductor]\nmetrics_listen = %s\n" % value)
    with caplog.at_level(logging.ERROR, logger=cmd.__name__):
        assert cmd._start_metrics(object(), Engine()) is False
    assert [r.getMessage().startswith("[conductor] metrics_listen: ")
            for r in caplog.records] == [True]


def test_an_address_in_use_stops_the_start(use, caplog, monkeypatch):
    use("[conductor]\nmetrics_listen = 127.0.0.1:9797\n")

    def taken(self):
        raise OSError(errno.EADDRINUSE, "Address already in use")
    monkeypatch.setattr(metrics.MetricsServer, "start", taken)
    with caplog.at_level(logging.ERROR, logger=cmd.__name__):
        assert cmd._start_metrics(object(), Engine()) is False
    assert [r.getMessage() for r in caplog.records] == [
        "Cannot serve metrics on [conductor] metrics_listen = "
        "127.0.0.1:9797: [Errno 98] Address already in use"]


def test_started_when_set(use, monkeypatch):
    use("[DEFAULT]\nhost = cond-7\n[conductor]\n"
        "metrics_listen = [::1]:9797\n")
    started = []
    monkeypatch.setattr(metrics.MetricsServer, "start",
                        lambda self: started.append(self))
    server = cmd._start_metrics(object(), Engine())
    assert started == [server]
    assert (server.host, server.port) == ("::1", 9797)


def test_chain_runs_in_order():
    said = []
    cmd._chain(lambda: said.append(1), lambda: said.append(2))()
    assert said == [1, 2]
