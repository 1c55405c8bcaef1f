"""One HSM call from trio, inline in the event loop against through a worker thread
(``AsyncHsm(calls=...)``, the switch's ``[hsm] calls``), and the bare thread hop with
no HSM work: process CPU per call.

    python -m benchmarks.run hsm_calls [--json]

The call is the link MAC of a Visa message (retail MAC, 200 bytes, TEST ZAK) on a
throwaway SoftHSM token; the baseline is ``calls="thread"``, the switch's way before
``inline`` existed, timed in the same run. Rounds alternate the modes (the machine is
shared: compare within a round); the figure is the median over rounds.
"""

from __future__ import annotations

import json as jsonlib
import os
import statistics
import tempfile
import time

import trio

from payswitch.hsm import AsyncHsm, Hsm, devkeys

CALLS = 2000
ROUNDS = 5
DATA = bytes(200)


async def _calls(ahsm: AsyncHsm, key: str) -> None:
    for _ in range(CALLS):
        await ahsm.generate_mac(key, DATA)


async def _hops() -> None:
    limiter = trio.CapacityLimiter(1)
    for _ in range(CALLS):
        await trio.to_thread.run_sync(int, limiter=limiter)


def _cpu_us_per_call(fn, *args) -> float:
    cpu = time.process_time()
    trio.run(fn, *args)
    return (time.process_time() - cpu) * 1e6 / CALLS


def measure() -> dict:
    with tempfile.TemporaryDirectory(prefix="payswitch-bench-hsm-calls-") as d:
        tokens = devkeys.make_dev_tokens(d)
        with Hsm(tokens["switch"]) as hsm:
            key = devkeys.zak("visa")
            modes = {"thread (baseline)": AsyncHsm(hsm, calls="thread"),
                     "inline": AsyncHsm(hsm, calls="inline")}
            rounds: dict[str, list[float]] = {name: [] for name in [*modes, "hop alone"]}
            for _ in range(ROUNDS):
                for name, ahsm in modes.items():
                    rounds[name].append(_cpu_us_per_call(_calls, ahsm, key))
                rounds["hop alone"].append(_cpu_us_per_call(_hops))
    us = {name: round(statistics.median(v), 1) for name, v in rounds.items()}
    return {"benchmark": "hsm_calls", "calls_per_round": CALLS, "rounds": ROUNDS,
            "load_average": os.getloadavg()[0], "cpu_us_per_call": us,
            "rounds_us": {name: [round(x, 1) for x in v] for name, v in rounds.items()},
            "inline_over_thread": round(us["inline"] / us["thread (baseline)"], 2)}


def main(json: bool = False) -> int:
    r = measure()
    if json:
        print(jsonlib.dumps(r))
        return 0
    print(f"HSM call from trio (retail MAC, 200 bytes), CPU per call, median of "
          f"{r['rounds']} rounds of {r['calls_per_round']}, load average "
          f"{r['load_average']:.1f}")
    for name, v in r["cpu_us_per_call"].items():
        print(f"  {name:<18} {v:>7.1f} us")
    print(f"  inline / thread   x{r['inline_over_thread']}")
    return 0
