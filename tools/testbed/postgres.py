"""A private PostgreSQL cluster for a test run: unix socket only, by PID."""

import glob
import os
import pwd
import shutil
import subprocess
import time

from tools.testbed import process


def _bin(name):
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/%s" % name))
    if not found:
        raise AssertionError(
            "PostgreSQL is not installed (tools/install-deps.sh installs "
            "it): no %s" % name)
    return found[-1]


class PostgresCluster(process.Child):
    stop_timeout = 30  # a database server's clean shutdown takes time

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "pg")
        self.data = os.path.join(self.dir, "data")
        self.socket_dir = os.path.join(self.dir, "sock")
        self.proc = None

    def start(self, timeout=60):
        os.makedirs(self.socket_dir)
        user = pwd.getpwnam("postgres")
        # initdb refuses to run as root: the cluster belongs to postgres.
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        os.chown(self.socket_dir, user.pw_uid, user.pw_gid)
        self._as_postgres([_bin("initdb"), "-D", self.data, "-A", "trust",
                           "-U", "postgres"], check=True)
        self.spawn(
            ["runuser", "-u", "postgres", "--", _bin("postgres"),
             "-D", self.data, "-c", "listen_addresses=",
             "-c", "unix_socket_directories=%s" % self.socket_dir,
             "-c", "fsync=off"],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "postgres.log"), "w"))
        deadline = time.monotonic() + timeout
        while subprocess.run([_bin("pg_isready"), "-q", "-h",
                              self.socket_dir]).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("PostgreSQL did not start; see %s"
                                     % os.path.join(self.dir,
                                                    "postgres.log"))
            time.sleep(0.2)

    def create_database(self, name):
        subprocess.run([_bin("psql"), "-q", "-h", self.socket_dir, "-U",
                        "postgres", "-c", "CREATE DATABASE %s" % name],
                       check=True, capture_output=True)
        return "postgresql+psycopg2://postgres@/%s?host=%s" % (
            name, self.socket_dir)

    def stop(self):
        super().stop()  # runuser passes SIGTERM on: smart shutdown
        shutil.rmtree(self.dir, ignore_errors=True)

    def _as_postgres(self, argv, check):
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv],
                              check=check, capture_output=True)
