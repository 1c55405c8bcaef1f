"""Ledger benchmark: transfers/s through the batched writer (fsync and synchronous_commit
on, as the server has them), p50/p99 latency per transfer as each caller sees it, and
pgbench's TPC-B (scale 10, same server, same run) as the baseline.

Load: ``LEDGER_BENCH_TASKS`` trio tasks (default 4000), each submitting one transfer at a
time, cardholder -> merchant, over 10,000 funded cardholders with debit limits and 100
merchants, for ``LEDGER_BENCH_SECONDS`` (default 10). A second phase does the same with
authorizations: a hold plus its ``approved`` and ``held`` events (MAC-chained, outbox).
Everything runs in scratch databases that are dropped afterwards.
"""

from __future__ import annotations

import json as jsonlib
import os
import random
import re
import shutil
import subprocess
import time

import psycopg
import trio

from payswitch.lab import realparts
from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.store import Ledger
from payswitch.ledger.types import Account, AccountFlags, Event, Transfer
from payswitch.ledger.writer import BatchWriter, WriterConfig, percentile

USD = 840
CARDS, MERCHANTS = 10_000, 100
CARD0, MERCHANT0, FUNDING = 1_000_000, 2_000_000, 3_000_000


def _setup(dsn: str) -> None:
    with Ledger(dsn, migrate=True) as led:
        accts = [Account(FUNDING, USD, 1)]
        accts += [Account(CARD0 + i, USD, 2, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
                  for i in range(CARDS)]
        accts += [Account(MERCHANT0 + i, USD, 3) for i in range(MERCHANTS)]
        for k in range(0, len(accts), 5000):
            led.create_accounts(accts[k:k + 5000])
        funding = [Transfer(10 + i, FUNDING, CARD0 + i, 10**12, USD, 1) for i in range(CARDS)]
        for k in range(0, len(funding), 5000):
            assert set(led.create_transfers(funding[k:k + 5000])) == {"created"}


def _run_writer(dsn: str, seconds: float, tasks: int, with_events: bool,
                max_batch: int = 2000, id_base: int = 10**9) -> dict:
    writer = BatchWriter(dsn, mac=hmac_sha256(b"bench-key-0123456789abcdef"),
                         config=WriterConfig(max_batch=max_batch, max_wait_ms=1.0))
    latencies: list[float] = []
    counts = {"ok": 0, "other": 0}
    next_id = [id_base]

    async def client(rng: random.Random, deadline: float) -> None:
        while trio.current_time() < deadline:
            next_id[0] += 1
            tid = next_id[0]
            card = CARD0 + rng.randrange(CARDS)
            merchant = MERCHANT0 + rng.randrange(MERCHANTS)
            t0 = time.perf_counter()
            if with_events:
                out = await writer.hold(
                    hold_id=tid, debit_account_id=card, credit_account_id=merchant,
                    amount_minor=rng.randrange(100, 10_000), ledger=USD, code=7, timeout_s=3600,
                    on_success=[Event(tid, "approved", {"response_code": "00"},
                                      payment_id=tid, transfer_id=tid),
                                Event(tid | 1 << 100, "held", {"amount_minor": 1},
                                      payment_id=tid, transfer_id=tid)])
            else:
                out = await writer.create_transfers([Transfer(
                    tid, card, merchant, rng.randrange(100, 10_000), USD, 1)])
            latencies.append(time.perf_counter() - t0)
            counts["ok" if out.results[0] == "created" else "other"] += 1

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            start = trio.current_time()
            deadline = start + seconds
            async with trio.open_nursery() as clients:
                for i in range(tasks):
                    clients.start_soon(client, random.Random(i), deadline)
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
        return elapsed

    elapsed = trio.run(main)
    n = counts["ok"] + counts["other"]
    return {
        "transfers": n, "created": counts["ok"], "seconds": round(elapsed, 2),
        "transfers_per_s": round(n / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "batches": writer.batches,
        "mean_batch": round(writer.transfers / max(1, writer.batches), 1),
    }


def _run_store(dsn: str, seconds: float, batch: int = 2000) -> dict:
    """The database's share: Ledger.submit of ready-made batches, one caller, no trio."""
    from payswitch.ledger.store import Request

    rng = random.Random(7)
    tid = 10**12
    n = 0
    with Ledger(dsn) as led:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            reqs = []
            for _ in range(batch):
                tid += 1
                reqs.append(Request((Transfer(tid, CARD0 + rng.randrange(CARDS),
                                              MERCHANT0 + rng.randrange(MERCHANTS),
                                              rng.randrange(100, 10_000), USD, 1),)))
            led.submit(reqs)
            n += batch
        elapsed = time.perf_counter() - t0
    return {"transfers": n, "batch": batch, "seconds": round(elapsed, 2),
            "transfers_per_s": round(n / elapsed, 1)}


def _pgbench(admin_dsn: str, seconds: float) -> dict:
    exe = shutil.which("pgbench") or next(
        (p for p in sorted(os.popen("ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null")
                           .read().split()) if p), None)
    if not exe:
        return {"error": "pgbench not found"}
    with realparts.scratch_database(admin_dsn, prefix="payswitch_bench_pgbench") as dsn:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        args = ["-h", str(info.get("host", "127.0.0.1")), "-p", str(info.get("port", 5432)),
                "-U", str(info.get("user", "postgres"))]
        env = dict(os.environ, PGCONNECT_TIMEOUT="5")
        subprocess.run([exe, "-i", "-s", "10", "-q", *args, info["dbname"]], check=True,
                       capture_output=True, env=env)
        clients = 8
        out = subprocess.run([exe, "-c", str(clients), "-j", "2", "-T", str(int(seconds)),
                              *args, info["dbname"]], check=True, capture_output=True,
                             text=True, env=env).stdout
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out) or \
        re.search(r"tps = ([0-9.]+)", out)
    lat = re.search(r"latency average = ([0-9.]+) ms", out)
    return {"tps": float(m.group(1)) if m else None, "clients": clients, "scale": 10,
            "latency_avg_ms": float(lat.group(1)) if lat else None}


def main(json: bool = False) -> int:
    seconds = float(os.environ.get("LEDGER_BENCH_SECONDS", "10"))
    tasks = int(os.environ.get("LEDGER_BENCH_TASKS", "4000"))
    with realparts.postgres_server() as admin:
        with psycopg.connect(admin, autocommit=True) as c:
            settings = {k: c.execute(f"show {k}").fetchone()[0]
                        for k in ("fsync", "synchronous_commit", "server_version")}
        with realparts.scratch_database(admin, prefix="payswitch_bench_ledger") as dsn:
            _setup(dsn)
            raw = _run_store(dsn, seconds)
            plain = _run_writer(dsn, seconds, tasks, with_events=False, id_base=10**10)
            auth = _run_writer(dsn, seconds, tasks, with_events=True, id_base=10**11)
            light = _run_writer(dsn, seconds / 2, 200, with_events=True, max_batch=2000,
                                id_base=10**13)
        pgb = _pgbench(admin, seconds)
    ratio = round(plain["transfers_per_s"] / pgb["tps"], 2) if pgb.get("tps") else None
    result = {
        "benchmark": "ledger", "server": settings, "tasks": tasks,
        "store_only": raw, "transfers": plain, "authorizations_with_events": auth,
        "authorizations_200_tasks": light,
        "pgbench_tpcb": pgb, "ratio_transfers_to_pgbench_tps": ratio,
    }
    if json:
        print(jsonlib.dumps(result, indent=2))
    else:
        print(f"ledger benchmark (PostgreSQL {settings['server_version']}, fsync="
              f"{settings['fsync']}, synchronous_commit={settings['synchronous_commit']}, "
              f"{tasks} trio tasks, {seconds:g} s per phase)")
        print(f"  store only        {raw['transfers_per_s']:>10,.0f}/s   (Ledger.submit of "
              f"{raw['batch']}-transfer batches, no trio; the database's share)")
        for name, r in (("transfers", plain), ("holds + 2 events", auth),
                        ("same, 200 tasks", light)):
            print(f"  {name:17} {r['transfers_per_s']:>10,.0f}/s   p50 {r['p50_ms']} ms   "
                  f"p99 {r['p99_ms']} ms   mean batch {r['mean_batch']}")
        print(f"  pgbench TPC-B s10 {pgb.get('tps') or 0:>10,.0f} tps ({pgb.get('clients')} "
              "clients)")
        print(f"  ratio transfers/s : pgbench tps = {ratio}")
    return 0
