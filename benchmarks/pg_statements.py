"""Where PostgreSQL's CPU goes per authorization: the full e2e benchmark against a private
server with pg_stat_statements, then a table of the statements (calls, execution and
planning ms, WAL) divided by the authorizations of the run.

    python -m benchmarks.run pg_statements [--json]

A private cluster (initdb in a temp dir, a free loopback port, ``pg_stat_statements``
preloaded, ``track_planning`` on; stopped and removed at the end): the system server is
never reconfigured. The e2e run (``benchmarks.e2e``, full mode, its own knobs:
PAYSWITCH_BENCH_TERMINALS, PAYSWITCH_BENCH_SECONDS) is pointed at it through
PAYSWITCH_PG_DSN; its warm-up is counted too (the authorizations are the journal's
``response`` rows). The backends' CPU over the run, from /proc, sampled every 0.5 s
(a backend that starts and ends between two samples is missed), is the denominator the
statements' times are compared with: what the table does not hold is parsing, the
protocol, commits and the WAL written at commit.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

import psycopg

from payswitch.lab.realparts import _as_pg_user, _pg_bin, free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
TOP = 8


@contextlib.contextmanager
def _server() -> Iterator[tuple[str, str]]:
    """(admin DSN, data dir) of a private cluster with pg_stat_statements."""
    prefix, uid, gid = _as_pg_user()
    root = tempfile.mkdtemp(prefix="payswitch-pgstat-")
    if uid is not None:
        os.chown(root, uid, gid)
    data, port = os.path.join(root, "data"), free_port()
    try:
        subprocess.run([*prefix, _pg_bin("initdb"), "-D", data, "-U", "postgres", "-A",
                        "trust", "--no-sync", "-E", "UTF8", "--locale=C"],
                       check=True, capture_output=True)
        opts = (f"-h 127.0.0.1 -p {port} -k {root} -c max_connections=200"
                " -c shared_preload_libraries=pg_stat_statements"
                " -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on")
        subprocess.run([*prefix, _pg_bin("pg_ctl"), "-D", data, "-l",
                        os.path.join(root, "server.log"), "-o", opts, "-w", "-t", "60",
                        "start"], check=True, capture_output=True)
        yield (f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
               " connect_timeout=3"), data
    finally:
        subprocess.run([*prefix, _pg_bin("pg_ctl"), "-D", data, "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _backend_cpu(data: str, stop: threading.Event, out: dict[int, list[float]]) -> None:
    """Per child of the postmaster: [CPU seconds when first seen, when last seen]."""
    with open(os.path.join(data, "postmaster.pid")) as f:
        master = int(f.readline())
    for _ in range(100_000):  # bounded: 0.5 s each, ~14 h
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
                out.setdefault(int(entry), [cpu, cpu])[1] = cpu
        if stop.wait(0.5):
            return


def run() -> dict:
    with _server() as (dsn, data):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create extension pg_stat_statements")
        cpu: dict[int, list[float]] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=_backend_cpu, args=(data, stop, cpu), daemon=True)
        sampler.start()
        e2e = subprocess.run([sys.executable, "-m", "benchmarks.run", "e2e", "--json"],
                             env={**os.environ, "PAYSWITCH_PG_DSN": dsn},
                             capture_output=True, text=True, timeout=600, check=True)
        stop.set()
        sampler.join(5)
        with psycopg.connect(dsn, autocommit=True) as conn:
            (auths,) = conn.execute("select count(*) from switch_journal"
                                    " where event = 'response'").fetchone() or (0,)
            rows = conn.execute(
                "select calls, total_exec_time, total_plan_time, wal_records, wal_bytes,"
                " left(regexp_replace(query, '\\s+', ' ', 'g'), 60)"
                " from pg_stat_statements where dbid = (select oid from pg_database"
                " where datname = current_database())"
                " order by total_exec_time + total_plan_time desc limit %s", (TOP,)).fetchall()
    per = max(auths, 1)
    backends = sum(b - a for a, b in cpu.values())
    return {
        "benchmark": "pg_statements", "authorizations": auths,
        "e2e": jsonlib.loads(e2e.stdout)["switch"]["machine_cores"],
        "postgres_cpu_us_per_auth": round(backends * 1e6 / per),
        "statements": [{"query": q, "calls": calls, "exec_ms": round(ex, 1),
                        "plan_ms": round(pl, 1),
                        "us_per_auth": round((ex + pl) * 1000 / per),
                        "wal_records_per_auth": round(wr / per, 1),
                        "wal_bytes_per_auth": round(int(wb) / per)}
                       for calls, ex, pl, wr, wb, q in rows],
    }


def main(json: bool = False) -> int:
    report = run()
    if json:
        print(jsonlib.dumps(report))
        return 0
    print(f"authorizations {report['authorizations']}, PostgreSQL processes"
          f" {report['postgres_cpu_us_per_auth']} µs CPU per authorization")
    print(f"{'µs/auth':>8} {'calls':>6} {'exec ms':>9} {'plan ms':>8} {'WAL rec':>7}"
          f" {'WAL B':>6}  statement")
    for s in report["statements"]:
        print(f"{s['us_per_auth']:>8} {s['calls']:>6} {s['exec_ms']:>9} {s['plan_ms']:>8}"
              f" {s['wal_records_per_auth']:>7} {s['wal_bytes_per_auth']:>6}  {s['query']}")
    return 0
