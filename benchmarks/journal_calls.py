"""The switch journal's hot path alone: process CPU per authorization (trio thread and
the store's threads; PostgreSQL's backend not counted) of ``TASKS`` concurrent tasks,
each doing what one authorization asks of the journal: ``claim``, ``append``
(``issuer_request``, with a PAN token and blob), ``complete`` (with one event), with
``THINK_MS`` of waiting before the append and before the complete (the issuer, the
rest of the path) so that the batches are as small as the switch's (~6-12 calls at 24
terminals).

    python -m benchmarks.run journal_calls [--json]

A scratch database on the PostgreSQL that ``lab.realparts`` finds or starts. Knobs
(environment): JOURNAL_BENCH_TASKS (default 24), JOURNAL_BENCH_THINK_MS (default 10),
JOURNAL_BENCH_SECONDS (per round, default 4), JOURNAL_BENCH_ROUNDS (default 3). No
baseline in the run: compare trees by running it in each, alternated.
"""

from __future__ import annotations

import json as jsonlib
import os
import statistics
import time
import uuid

import trio

from payswitch.codecs.iso8583.message import Message
from payswitch.lab import realparts
from payswitch.switch.journal import Store

REQUEST = Message(mti="0100", processing_code="000000", amount_minor=1234, stan="000001",
                  currency="840", terminal_id="TERM0001", merchant_id="MERCH0000001",
                  pan="4761739001010010", rrn="123456789012",
                  transmission_time="1128223000", local_time="223000", local_date="1128",
                  mcc="5999", pos_entry_mode="051")
ANSWER = Message(mti="0110", processing_code="000000", amount_minor=1234, stan="000001",
                 response_code="00", auth_code="123456", rrn="123456789012",
                 terminal_id="TERM0001", pan="4761739001010010")


async def _round(store: Store, tasks: int, think_s: float, seconds: float,
                 ) -> tuple[int, float]:
    done = 0
    stop = trio.current_time() + seconds

    async def authorization() -> None:
        nonlocal done
        while trio.current_time() < stop:
            key = uuid.uuid4().hex
            await store.claim(key, "pos", REQUEST, "f" * 64)
            await trio.sleep(think_s)
            await store.append("issuer_request", REQUEST, dup_key=key, link="visa",
                               pan=("t" * 64, bytes(44)))
            await trio.sleep(think_s)
            await store.complete(key, "pos", ANSWER, [("issuer_response", ANSWER, "visa")])
            done += 1

    cpu = time.process_time()
    async with trio.open_nursery() as n:
        for _ in range(tasks):
            n.start_soon(authorization)
    return done, (time.process_time() - cpu) * 1e6 / max(done, 1)


def measure() -> dict:
    tasks = int(os.environ.get("JOURNAL_BENCH_TASKS", "24"))
    think_s = float(os.environ.get("JOURNAL_BENCH_THINK_MS", "10")) / 1000
    seconds = float(os.environ.get("JOURNAL_BENCH_SECONDS", "4"))
    rounds = int(os.environ.get("JOURNAL_BENCH_ROUNDS", "3"))
    figures = []
    with (realparts.postgres_server() as admin,
          realparts.scratch_database(admin, prefix="payswitch_bench_journal") as dsn):
        store = Store(dsn)
        try:
            trio.run(store.migrate)
            for _ in range(rounds):
                done, us = trio.run(_round, store, tasks, think_s, seconds)
                figures.append({"authorizations": done, "per_s": round(done / seconds, 1),
                                "cpu_us_per_auth": round(us, 1)})
        finally:
            store.close()
    return {"benchmark": "journal_calls", "tasks": tasks, "think_ms": think_s * 1000,
            "load_average": os.getloadavg()[0], "rounds": figures,
            "median_cpu_us_per_auth": statistics.median(f["cpu_us_per_auth"]
                                                        for f in figures)}


def main(json: bool = False) -> int:
    r = measure()
    if json:
        print(jsonlib.dumps(r))
        return 0
    print(f"journal hot path, {r['tasks']} tasks, {r['think_ms']:g} ms think, "
          f"load average {r['load_average']:.1f}")
    for f in r["rounds"]:
        print(f"  {f['authorizations']} authorizations ({f['per_s']}/s): "
              f"{f['cpu_us_per_auth']} us of process CPU each")
    print(f"  median {r['median_cpu_us_per_auth']} us per authorization")
    return 0
