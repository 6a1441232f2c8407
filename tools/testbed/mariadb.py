"""A private MariaDB server for a test run: unix socket only, by PID."""

import os
import shutil
import subprocess
import time

from tools.testbed import process


def _require(name):
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if path is None:
        raise AssertionError(
            "MariaDB is not installed (tools/install-deps.sh installs "
            "mariadb-server): no %s" % name)
    return path


class MariaDBServer(process.Child):
    stop_timeout = 30  # a database server's clean shutdown takes time

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "mariadb")
        self.data = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "mysqld.sock")
        self.log = os.path.join(self.dir, "mariadbd.log")
        self.proc = None

    def start(self, timeout=60):
        os.makedirs(self.dir)
        # The server runs as root here (--user=root): a private datadir in
        # the run's workdir, no TCP, gone when the test ends.
        subprocess.run(
            [_require("mariadb-install-db"), "--datadir=%s" % self.data,
             "--user=root", "--auth-root-authentication-method=normal",
             "--skip-test-db"], check=True, capture_output=True)
        self.spawn(
            [_require("mariadbd"), "--no-defaults",
             "--datadir=%s" % self.data, "--socket=%s" % self.socket,
             "--pid-file=%s" % os.path.join(self.dir, "mariadbd.pid"),
             "--skip-networking", "--user=root",
             "--innodb-flush-log-at-trx-commit=0"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        deadline = time.monotonic() + timeout
        while self._client("SELECT 1").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("MariaDB did not start; see %s"
                                     % self.log)
            time.sleep(0.2)

    def _client(self, sql):
        return subprocess.run(
            [_require("mariadb"), "--no-defaults", "-S", self.socket,
             "-u", "root", "-e", sql], capture_output=True, check=False)

    def create_database(self, name):
        done = self._client("CREATE DATABASE %s CHARACTER SET utf8mb4" % name)
        if done.returncode != 0:
            raise AssertionError(done.stderr.decode(errors="replace"))
        return "mysql+pymysql://root@localhost/%s?unix_socket=%s" % (
            name, self.socket)

    def stop(self):
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)
