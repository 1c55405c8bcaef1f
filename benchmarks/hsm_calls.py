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

Third table: the switch's per-authorization TDES commands (PIN translation from a TPK
and from TDES DUKPT, link MAC generate and verify) on an ``Hsm`` keeping cipher
operations open (``Policy.key_streams``, the default) and on one that does not
(``key_streams=0``: init per call, the way before), alternated in each round; with the
bare one-block DES3-ECB under the cached ZPK handle three ways: python-pkcs11's
``encrypt`` (baseline), the direct init + encrypt, and the update of a kept-open
operation (what is left of a block once SoftHSM's init is gone).
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

from payswitch.hsm import AsyncHsm, Hsm, Policy, _raw, devkeys, session

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


def _switch_calls(tokens: dict, hsm: Hsm, fresh: Hsm,
                  streams: _raw.Streams) -> dict[str, Callable[[], object]]:
    ksn = bytes.fromhex("FFFF9876543210E00001")
    with Hsm(tokens["terminal"]) as th:
        block = th.encrypt_pin(devkeys.TPK, "1234", PAN, 0)
        dblock = th.dukpt_encrypt_pin(devkeys.BDK, ksn, "1234", PAN)
    zak, zpk = devkeys.zak("visa"), devkeys.zpk("visa")
    mac = hsm.generate_mac(zak, DATA)
    key = hsm._key(zpk).main
    one = bytes(8)
    calls: dict[str, Callable[[], object]] = {
        "DES3-ECB block, python-pkcs11 (baseline)": lambda: key.encrypt(
            one, mechanism=Mechanism.DES3_ECB),
        "DES3-ECB block, direct init + encrypt": lambda: _raw.encrypt(
            key, one, Mechanism.DES3_ECB),
        "DES3-ECB block, kept-open update": lambda: streams.ecb(key, one, Mechanism.DES3_ECB),
    }
    for name, h in (("init per call", fresh), ("kept open", hsm)):
        calls |= {
            f"translate_pin TPK, {name}": lambda h=h: h.translate_pin(
                block, PAN, devkeys.TPK, zpk),
            f"translate_pin_dukpt, {name}": lambda h=h: h.translate_pin_dukpt(
                dblock, ksn, PAN, devkeys.BDK, zpk),
            f"generate_mac 200 B, {name}": lambda h=h: h.generate_mac(zak, DATA),
            f"verify_mac 200 B, {name}": lambda h=h: h.verify_mac(zak, DATA, mac),
        }
    return calls


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
        with Hsm(tokens["switch"]) as hsm, Hsm(tokens["switch"],
                                                policy=Policy(key_streams=0)) as fresh:
            key = devkeys.zak("visa")
            modes = {"thread (baseline)": AsyncHsm(hsm, calls="thread"),
                     "inline": AsyncHsm(hsm, calls="inline")}
            rounds: dict[str, list[float]] = {name: [] for name in [*modes, "hop alone"]}
            pan_calls = _pan_calls(hsm)
            pan_rounds: dict[str, list[float]] = {name: [] for name in pan_calls}
            streams = _raw.Streams(hsm._session, 1, 3600.0, time.monotonic)
            switch_calls = _switch_calls(tokens, hsm, fresh, streams)
            switch_rounds: dict[str, list[float]] = {name: [] for name in switch_calls}
            for _ in range(ROUNDS):
                for name, ahsm in modes.items():
                    rounds[name].append(_cpu_us_per_call(_calls, ahsm, key))
                rounds["hop alone"].append(_cpu_us_per_call(_hops))
                for name, fn in pan_calls.items():
                    pan_rounds[name].append(_cpu_us_sync(fn))
                for name, fn in switch_calls.items():
                    switch_rounds[name].append(_cpu_us_sync(fn))
            streams.close()
    us = _median_rounds(rounds)
    return {"benchmark": "hsm_calls", "calls_per_round": CALLS, "rounds": ROUNDS,
            "load_average": os.getloadavg()[0], "cpu_us_per_call": us,
            "rounds_us": {name: [round(x, 1) for x in v] for name, v in rounds.items()},
            "inline_over_thread": round(us["inline"] / us["thread (baseline)"], 2),
            "pan_cpu_us_per_call": _median_rounds(pan_rounds),
            "switch_cpu_us_per_call": _median_rounds(switch_rounds)}


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
    print("Switch TDES commands, CPU per call, same rounds (init per call = baseline)")
    for name, v in r["switch_cpu_us_per_call"].items():
        print(f"  {name:<42} {v:>7.1f} us")
    return 0
