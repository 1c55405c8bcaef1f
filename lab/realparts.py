"""The real parts payswitch runs on: PostgreSQL and Mosquitto, found or started.

Order for PostgreSQL: ``PAYSWITCH_PG_DSN`` if set; else a server on 127.0.0.1:5432
(trust auth, as on the team's machines); else a private throwaway cluster (initdb +
pg_ctl) on a free loopback port, removed afterwards. Mosquitto likewise: 127.0.0.1:1883
when it answers, else a private broker on a free port.

Nothing here drops or rewrites data it did not create: callers get a scratch database
of their own (``scratch_database``) and it is dropped when they leave.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import psycopg

DEFAULT_PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
START_TIMEOUT_S = 30.0


class RealPartError(RuntimeError):
    """A real part could not be found or started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout_s):
        return True
    return False


def _pg_answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("select 1")
        return True
    except psycopg.Error:
        return False


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RealPartError(f"{name} not found: run `make setup` (installs postgresql)")
    return candidates[-1]


def _as_pg_user() -> tuple[list[str], int | None, int | None]:
    """initdb refuses to run as root: run it as the postgres account then."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pw = pwd.getpwnam("nobody")
    return ["runuser", "-u", pw.pw_name, "--"], pw.pw_uid, pw.pw_gid


@contextlib.contextmanager
def private_postgres() -> Iterator[str]:
    """A throwaway cluster on a free loopback port; yields an admin DSN."""
    prefix, uid, gid = _as_pg_user()
    root = tempfile.mkdtemp(prefix="payswitch-pg-")
    data = os.path.join(root, "data")
    if uid is not None:
        os.chown(root, uid, gid)
    port = free_port()
    log = os.path.join(root, "server.log")
    try:
        try:
            subprocess.run(
                [*prefix, _pg_bin("initdb"), "-D", data, "-U", "postgres", "-A", "trust",
                 "--no-sync", "-E", "UTF8", "--locale=C"],
                check=True, capture_output=True,
            )
            opts = f"-h 127.0.0.1 -p {port} -k {root} -c max_connections=200"
            subprocess.run(
                [*prefix, _pg_bin("pg_ctl"), "-D", data, "-l", log, "-o", opts, "-w",
                 "-t", str(int(START_TIMEOUT_S)), "start"],
                check=True, capture_output=True,
            )
        except subprocess.CalledProcessError as e:
            detail = e.stderr.decode(errors="replace")
            raise RealPartError(f"private PostgreSQL failed: {detail}") from e
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=3"
    finally:
        subprocess.run([*prefix, _pg_bin("pg_ctl"), "-D", data, "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields an admin DSN of a reachable server, starting a private one if needed."""
    dsn = os.environ.get("PAYSWITCH_PG_DSN")
    if dsn:
        yield dsn
        return
    if _pg_answers(DEFAULT_PG_DSN):
        yield DEFAULT_PG_DSN
        return
    with private_postgres() as private_dsn:
        yield private_dsn


def _with_dbname(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@contextlib.contextmanager
def scratch_database(admin_dsn: str, prefix: str = "payswitch_test") -> Iterator[str]:
    """A database of our own on the server; dropped (with its sessions) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield _with_dbname(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@contextlib.contextmanager
def mosquitto_broker() -> Iterator[tuple[str, int]]:
    """127.0.0.1:1883 when a broker answers there, else a private Mosquitto."""
    if port_open("127.0.0.1", 1883):
        yield ("127.0.0.1", 1883)
        return
    with private_mosquitto() as addr:
        yield addr


@contextlib.contextmanager
def private_mosquitto(port: int | None = None, conf: str = "") -> Iterator[tuple[str, int]]:
    """A Mosquitto of our own on ``port`` (default: a free one; a fixed one lets a test
    stop the broker and start another where its clients reconnect); ``conf``: more
    mosquitto.conf lines (e.g. ``max_queued_messages 0``: a slow test subscriber
    misses nothing; the default 1000 drops QoS 1 messages beyond it)."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(exe):
        raise RealPartError("mosquitto not found: run `make setup`")
    root = tempfile.mkdtemp(prefix="payswitch-mqtt-")
    port = port or free_port()
    path = os.path.join(root, "mosquitto.conf")
    with open(path, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                f"{conf}\n")
    proc = subprocess.Popen([exe, "-c", path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_open("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RealPartError("private mosquitto did not start")
            time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        shutil.rmtree(root, ignore_errors=True)
