"""One conductor per SQLite file (db/sqlite_owner.py), in one process:
flock conflicts between two opens of the lock file as between two
processes.  Two real cs2os-conductor processes:
tests/functional/test_conductor_sqlite_owner.py."""

import os

import pytest

from cs2os_agent.db import sqlite_owner


def test_a_second_owner_is_refused_naming_the_first(tmp_path):
    url = "sqlite:///%s" % (tmp_path / "cs2os.sqlite")
    first = sqlite_owner.own(url)
    try:
        with pytest.raises(sqlite_owner.SQLiteOwnedError) as refused:
            sqlite_owner.own(url)
    finally:
        first.close()
    assert str(refused.value) == (
        "another cs2os-conductor (pid %d) owns SQLite database %s; "
        "several conductors need MySQL/MariaDB or PostgreSQL: set "
        "[database] connection" % (os.getpid(), tmp_path / "cs2os.sqlite"))
    # Let go: the next one takes it.
    sqlite_owner.own(url).close()


def test_one_file_however_it_is_spelled(tmp_path, monkeypatch):
    real = tmp_path / "data"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    first = sqlite_owner.own("sqlite:///data/cs2os.sqlite")
    try:
        with pytest.raises(sqlite_owner.SQLiteOwnedError,
                           match="owns SQLite database %s/cs2os.sqlite"
                           % real):
            sqlite_owner.own("sqlite:///%s/link/cs2os.sqlite" % tmp_path)
    finally:
        first.close()
    assert (real / "cs2os.sqlite.conductor-lock").read_text() == \
        "%d\n" % os.getpid()


@pytest.mark.parametrize("url", [
    "mysql+pymysql://cs2os:pw@db/cs2os",
    "postgresql+psycopg2://cs2os@db/cs2os",
    "sqlite://",
    "sqlite:///:memory:",
])
def test_nothing_to_own_but_a_sqlite_file(url):
    assert sqlite_owner.own(url) is None


def test_a_missing_directory_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sqlite_owner.own("sqlite:///%s/nowhere/cs2os.sqlite" % tmp_path)
