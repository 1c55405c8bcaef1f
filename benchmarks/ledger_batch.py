"""One ledger batch's CPU, both sides: the writer thread's (``Ledger.submit``: reads, engine,
event chain with the HSM's event MAC, literals, writes) and PostgreSQL's backend, per
authorization, for switch-shaped batches: each authorization an off-us hold plus the
switch's four events (``received``, ``routed``, ``approved``, ``held``; ``declined`` on
failure), payloads checked beforehand as ``BatchWriter.submit`` does on the trio thread.

    python -m benchmarks.run ledger_batch [--json]

A scratch database and a development SoftHSM token (the EVK key: ``Hsm.event_mac``, as
the switch's writer calls it). Sizes: ``LEDGER_BATCH_SIZES`` authorizations per batch
(default "2,8,24": the e2e benchmark's batches run ~2 at 8 terminals, ~6-24 at 48),
``LEDGER_BATCH_BATCHES`` batches per size (default 600) after 50 of warm-up. CPU:
``time.thread_time`` around each submit; the backend's from /proc (clock ticks).
"""

from __future__ import annotations

import json as jsonlib
import os
import tempfile
import time

import payswitch.ledger as L
from payswitch.hsm import Hsm, devkeys
from payswitch.lab import realparts
from payswitch.ledger import events as ev
from payswitch.ledger.store import Ledger, Request

USD = 840
RECEIVABLE, PAYABLE = 1, 2
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _backend_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _request(n: int) -> tuple[Request, dict[int, str]]:
    pid, hold = 10**9 + n, 2 * 10**9 + n
    common = (
        L.Event(3 * 10**9 + n, "received", {
            "mti": "0100", "stan": f"{n % 10**6:06d}", "terminal_id": "TERM0001",
            "pan_masked": "476173******0119", "amount_minor": 1000 + n % 900,
            "currency": "840", "processing_code": "000000"}, payment_id=pid),
        L.Event(4 * 10**9 + n, "routed", {"route": "visa"}, payment_id=pid))
    ok, ko = L.authorization_events(
        payment_id=pid, hold_id=hold, approved_event_id=5 * 10**9 + n,
        held_event_id=6 * 10**9 + n, declined_event_id=7 * 10**9 + n,
        amount_minor=1000 + n % 900, currency="USD",
        approved={"auth_code": f"{n % 10**6:06d}", "link": "visa"},
        declined={"response_code": "96", "reason": "ledger"})
    t = L.Transfer(hold, RECEIVABLE, PAYABLE, 1000 + n % 900, USD, 2, L.TransferFlags.PENDING,
                   0, 600)
    req = Request((t,), (*common, *ok), (*common, *ko))
    checked = {id(e): ev.canonical_payload(e.payload) for e in (*req.on_success,
                                                                 *req.on_failure)}
    return req, checked


def _run(led: Ledger, size: int, batches: int, base: int) -> dict:
    backend = led.conn.info.backend_pid
    n = base
    writer_s = pg_s = 0.0
    for k in range(50 + batches):
        reqs, checked = [], {}
        for _ in range(size):
            r, c = _request(n)
            reqs.append(r)
            checked.update(c)
            n += 1
        if k == 50:
            writer_s, pg0 = 0.0, _backend_cpu_s(backend)
        cpu = time.thread_time()
        out = led.submit(reqs, checked)
        writer_s += time.thread_time() - cpu
        assert all(o.results == ("created",) for o in out)
    pg_s = _backend_cpu_s(backend) - pg0
    auths = size * batches
    return {"auths_per_batch": size, "batches": batches,
            "writer_us_per_auth": round(writer_s * 1e6 / auths, 1),
            "postgres_us_per_auth": round(pg_s * 1e6 / auths, 1)}


def measure() -> dict:
    sizes = [int(x) for x in os.environ.get("LEDGER_BATCH_SIZES", "2,8,24").split(",")]
    batches = int(os.environ.get("LEDGER_BATCH_BATCHES", "600"))
    rows = []
    with (tempfile.TemporaryDirectory(prefix="payswitch-bench-ledger-batch-") as d,
          Hsm(devkeys.make_dev_tokens(d)["switch"]) as hsm,
          realparts.postgres_server() as admin,
          realparts.scratch_database(admin, prefix="payswitch_bench_lbatch") as dsn,
          Ledger(dsn, migrate=True, mac=lambda data: hsm.event_mac(devkeys.EVK, data)) as led):
        led.create_accounts([L.Account(RECEIVABLE, USD, 3), L.Account(PAYABLE, USD, 4)])
        for k, size in enumerate(sizes):
            rows.append(_run(led, size, batches, 10**7 * (k + 1)))
    return {"benchmark": "ledger_batch", "load_average": os.getloadavg()[0], "rows": rows}


def main(json: bool = False) -> int:
    r = measure()
    if json:
        print(jsonlib.dumps(r))
        return 0
    print(f"ledger batch CPU per authorization (hold + 4 events, HSM event MAC), load "
          f"average {r['load_average']:.1f}")
    print("auths/batch  batches  writer thread µs  PostgreSQL backend µs")
    for row in r["rows"]:
        print(f"{row['auths_per_batch']:>11}  {row['batches']:>7}  "
              f"{row['writer_us_per_auth']:>16}  {row['postgres_us_per_auth']:>21}")
    return 0
