"""SIGHUP's reload (common/service.py) and SIGUSR2's report (common/gmr.py)
in process; the real services get the signals in
tests/functional/test_service_signals.py."""

import signal
import threading

import pytest
from oslo_config import cfg

import cs2os_agent
from cs2os_agent.common import gmr
from cs2os_agent.common import service


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "reload.conf"
    path.write_text("[DEFAULT]\nlevel = 1\nfixed = a\n")
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.IntOpt("level", mutable=True),
                        cfg.StrOpt("fixed")])
    conf(["--config-file", str(path)], default_config_files=[])
    conf.path = path
    return conf


def test_a_reload_applies_mutable_options_only(config):
    seen = []
    config.register_mutate_hook(lambda c, fresh: seen.append(dict(fresh)))
    config.path.write_text("[DEFAULT]\nlevel = 2\nfixed = b\n")
    reloader = service.ConfigReloader(config)
    changed = reloader.reload()
    # As oslo.config reports them: the values as written in the file.
    assert changed == {(None, "level"): ("1", "2")}
    assert seen == [changed]
    assert (config.level, config.fixed) == (2, "a")
    assert reloader.reloads == 1


def test_a_broken_file_keeps_the_running_configuration(config, caplog):
    config.path.write_text("[DEFAULT]\nlevel = 3\n[broken\n")
    reloader = service.ConfigReloader(config)
    assert reloader.reload() is None
    assert config.level == 1 and reloader.reloads == 0
    assert "Reloading the configuration failed, the running one stays" \
        in caplog.text


def test_the_handler_only_queues_and_the_thread_reloads(config):
    reloaded = threading.Event()
    config.register_mutate_hook(lambda c, fresh: reloaded.set())
    reloader = service.ConfigReloader(config)
    config.path.write_text("[DEFAULT]\nlevel = 5\n")
    reloader.handle(signal.SIGHUP, None)
    # Not started yet: nothing happened in the handler itself.
    assert config.level == 1
    reloader.start()
    assert reloaded.wait(10)
    assert config.level == 5


def test_reload_on_sighup_installs_the_handler(config):
    previous = signal.getsignal(signal.SIGHUP)
    try:
        reloader = service.reload_on_sighup(config)
        assert signal.getsignal(signal.SIGHUP) == reloader.handle
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_the_report_names_cs2os_and_its_version(monkeypatch):
    version = gmr.VersionInfo()
    assert version.product_string().startswith("cs2os")
    assert version.vendor_string()
    monkeypatch.setattr(gmr.metadata, "version", lambda name: "9.9")
    assert version.version_string_with_package() == \
        "%s (installed distribution 9.9)" % cs2os_agent.__version__
    monkeypatch.setattr(gmr.metadata, "version",
                        lambda name: cs2os_agent.__version__)
    assert version.version_string_with_package() == cs2os_agent.__version__


def test_gmr_setup_arms_sigusr2(config):
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        gmr.setup(config, "cs2os-test")
        assert config.oslo_reports.log_dir is None
        assert signal.getsignal(signal.SIGUSR2) is not previous
    finally:
        signal.signal(signal.SIGUSR2, previous)
