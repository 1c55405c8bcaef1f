"""A private PostgreSQL cluster a test can crash and restart (issue 9's chaos test).

``realparts.private_postgres`` gives a throwaway server but no way to kill it and bring
the same data back; this does: ``kill()`` SIGKILLs the postmaster and every backend
(a crash: no checkpoint, no shutdown packet to clients), ``start()`` starts it again on
the same port and data directory (crash recovery).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import psycopg

from payswitch.lab.realparts import _as_pg_user, _pg_bin, free_port, port_open

START_TIMEOUT_S = 60


class PgCluster:
    def __init__(self) -> None:
        self.prefix, uid, gid = _as_pg_user()
        self.root = tempfile.mkdtemp(prefix="payswitch-pgchaos-")
        if uid is not None:
            os.chown(self.root, uid, gid)
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.dsn = (f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
                    " connect_timeout=3")
        subprocess.run([*self.prefix, _pg_bin("initdb"), "-D", self.data, "-U", "postgres",
                        "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"],
                       check=True, capture_output=True)

    def start(self) -> None:
        """The postmaster as this process's child (via runuser when root), so that a
        killed one is reaped here: a zombie would keep its PID "alive" for the next
        start's lock-file check when nothing else reaps it."""
        log = open(os.path.join(self.root, "server.log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*self.prefix, _pg_bin("postgres"), "-D", self.data, "-h", "127.0.0.1",
             "-p", str(self.port), "-k", self.root, "-c", "max_connections=100"],
            stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("private PostgreSQL did not start")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                conn.execute("select 1")
            return True
        except psycopg.Error:
            return False

    def _pids(self) -> list[int]:
        """The postmaster and its children (backends, walwriter, ...)."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            master = int(f.readline())
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        children.append(int(entry))
        return [master, *children]

    def kill(self) -> None:
        """SIGKILL the whole server, as a crash would; returns once it is gone."""
        pids = self._pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)  # runuser (or we) reap the postmaster
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = [p for p in pids if os.path.exists(f"/proc/{p}")
                     and not _zombie(p)]
            if not alive and not port_open("127.0.0.1", self.port, 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("PostgreSQL did not die")

    def stop(self) -> None:
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
