"""One HSM call from trio, inline in the event loop against through a worker thread
(``AsyncHsm(calls=...)``, the switch's ``[hsm] calls``), and the bare thread hop with
no HSM work: process CPU per call.

    python -m benchmarks.run hsm_calls [--json]

The call is the link MAC of a Visa message (retail MAC, 200 bytes, TEST ZAK) on a
throwaway SoftHSM token; the baseline is ``calls="thread"``, the switch's way before
``inline`` existed, timed in the same run. Rounds alternate the modes (the machine is
shared: compare within a round); the figure is the median over rounds.

Second table: the per-authorization PAN and ledger calls (HMAC-SHA256 of the PAN token
and the event MAC, AES-GCM of the PAN at rest), each as python-pkcs11's call (the
baseline, the way hsm/pan.py made it before) and as the direct call hsm/_raw.py makes,
on the same TEST key and session, alternated in each round; then the whole ``Hsm``
command (key lookup, usage check, lock) as the switch calls it.
"""

from __future__ import annotations

import json as jsonlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import trio
from pkcs11 import Mechanism
from pkcs11.mechanisms import GCMParams

from payswitch.hsm import AsyncHsm, Hsm, _raw, devkeys, session

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


PAN = "4761739001010010"
EVENT = bytes(300)  # about one event's MAC input (ledger.events.mac_input)
NONCE, AAD = bytes(range(12)), b"payswitch.pan|0123456789abcdef"


def _pan_calls(hsm: Hsm) -> dict[str, Callable[[], object]]:
    evk, dek = hsm._key(devkeys.EVK).main, hsm._key(devkeys.DEK).main
    blob = hsm.encrypt_pan(devkeys.DEK, PAN, AAD)
    gcm = GCMParams(NONCE, AAD)
    return {
        "HMAC-SHA256, python-pkcs11 (baseline)": lambda: evk.sign(
            EVENT, mechanism=Mechanism.SHA256_HMAC),
        "HMAC-SHA256, direct": lambda: _raw.hmac_sha256(evk, EVENT),
        "AES-GCM encrypt, python-pkcs11 (baseline)": lambda: dek.encrypt(
            PAN.encode(), mechanism=Mechanism.AES_GCM, mechanism_param=gcm),
        "AES-GCM encrypt, direct": lambda: _raw.gcm_encrypt(dek, NONCE, PAN.encode(), AAD),
        "AES-GCM decrypt, python-pkcs11 (baseline)": lambda: dek.decrypt(
            blob[12:], mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(blob[:12], AAD)),
        "AES-GCM decrypt, direct": lambda: _raw.gcm_decrypt(dek, blob[:12], blob[12:], AAD),
        "command event_mac": lambda: hsm.event_mac(devkeys.EVK, EVENT),
        "command pan_token": lambda: hsm.pan_token(devkeys.TKN, PAN),
        "command encrypt_pan": lambda: hsm.encrypt_pan(devkeys.DEK, PAN, AAD),
        "command decrypt_pan": lambda: hsm.decrypt_pan(devkeys.DEK, blob, AAD),
    }


def _cpu_us_sync(fn: Callable[[], object]) -> float:
    with session.LIBRARY_LOCK:  # as every library call; uncontended here
        cpu = time.process_time()
        for _ in range(CALLS):
            fn()
        return (time.process_time() - cpu) * 1e6 / CALLS


def _median_rounds(rounds: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.median(v), 1) for name, v in rounds.items()}


def measure() -> dict:
    with tempfile.TemporaryDirectory(prefix="payswitch-bench-hsm-calls-") as d:
        tokens = devkeys.make_dev_tokens(d)
        with Hsm(tokens["switch"]) as hsm:
            key = devkeys.zak("visa")
            modes = {"thread (baseline)": AsyncHsm(hsm, calls="thread"),
                     "inline": AsyncHsm(hsm, calls="inline")}
            rounds: dict[str, list[float]] = {name: [] for name in [*modes, "hop alone"]}
            pan_calls = _pan_calls(hsm)
            pan_rounds: dict[str, list[float]] = {name: [] for name in pan_calls}
            for _ in range(ROUNDS):
                for name, ahsm in modes.items():
                    rounds[name].append(_cpu_us_per_call(_calls, ahsm, key))
                rounds["hop alone"].append(_cpu_us_per_call(_hops))
                for name, fn in pan_calls.items():
                    pan_rounds[name].append(_cpu_us_sync(fn))
    us = _median_rounds(rounds)
    return {"benchmark": "hsm_calls", "calls_per_round": CALLS, "rounds": ROUNDS,
            "load_average": os.getloadavg()[0], "cpu_us_per_call": us,
            "rounds_us": {name: [round(x, 1) for x in v] for name, v in rounds.items()},
            "inline_over_thread": round(us["inline"] / us["thread (baseline)"], 2),
            "pan_cpu_us_per_call": _median_rounds(pan_rounds)}


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
    print("PAN and event MAC calls, CPU per call, same rounds (python-pkcs11 = baseline)")
    for name, v in r["pan_cpu_us_per_call"].items():
        print(f"  {name:<42} {v:>7.1f} us")
    return 0
