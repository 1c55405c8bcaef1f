"""HSM operations per second on SoftHSM2, one thread, one session, with a bare
PKCS#11 DES3-ECB encrypt timed in the same run as the baseline.

``python -m benchmarks.run hsm [--json]``. Uses a throwaway token in a temp dir and
the TEST keys of ``payswitch.hsm.devkeys``.
"""

from __future__ import annotations

import functools
import itertools
import json as jsonlib
import platform
import sys
import tempfile
import time
from collections.abc import Callable

import pkcs11
from pkcs11 import Attribute, Mechanism
from pkcs11 import KeyType as PK

from payswitch.hsm import Hsm, _raw, devkeys, dukpt, make_token, session

MIN_SECONDS = 1.0
PAN = "4761739001010010"
PIN = "1234"
# Issue 13's floors, as ratios to the bare DES3-ECB of the same run.
FLOORS = {
    "verify_arqc + ARPC CVN 10": 0.12,
    "verify_arqc + ARPC CVN 18": 0.12,
    "verify_arqc + ARPC CVN 16": 0.12,
    "verify_arqc + ARPC CVN 17 (method 2)": 0.12,
    "translate_pin DUKPT->ZPK": 0.2,
}


def _cycle(items: list) -> Callable[[], object]:
    """Calls that take the next prepared input each time (a new ATC / KSN per call,
    as in real traffic, so no cache hit comes from repeating one transaction)."""
    it = itertools.cycle(items)
    return lambda: next(it)()


def _rate(fn: Callable[[], object], min_seconds: float = MIN_SECONDS) -> float:
    """Calls per second: warm up, then batches until min_seconds have passed."""
    for _ in range(20):
        fn()
    n, start = 0, time.perf_counter()
    batch = 50
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n / elapsed


BASELINE = "des3_ecb_encrypt (baseline)"


def _measure_all(ops: dict[str, Callable[[], object]],
                 min_seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """Rates, and each one's ratio to the baseline timed right before and after it: on
    a shared machine the load moves within a run, and a ratio to a baseline measured
    seconds earlier moved with it (by 2x in one run)."""
    base_fn = ops[BASELINE]
    rates: dict[str, float] = {}
    ratios: dict[str, float] = {}
    bases: list[float] = []
    for name, fn in ops.items():
        if name == BASELINE:
            continue
        before = _rate(base_fn, min_seconds / 4)
        rates[name] = _rate(fn, min_seconds)
        after = _rate(base_fn, min_seconds / 4)
        bases += [before, after]
        ratios[name] = rates[name] / ((before + after) / 2)
    rates = {BASELINE: sum(bases) / len(bases), **rates}
    ratios = {BASELINE: 1.0, **ratios}
    return rates, ratios


def _py_derive(base: object, derive: bool = False) -> object:
    """A session key derived through python-pkcs11, as hsm/ did before hsm/_raw.py."""
    param, buf = session.derivation_param(bytes(16))
    return base.derive_key(  # type: ignore[attr-defined]
        PK.DES2, 128, mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA, mechanism_param=param,
        template={Attribute.VALUE_LEN: pkcs11.DEFAULT, Attribute.TOKEN: False,
                  Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                  Attribute.ENCRYPT: True, Attribute.DERIVE: derive})


def _steps(udk: object, sk: object, token_key: object, ipek: bytes, ksn: bytes,
           block: bytes) -> dict[str, Callable[[], object]]:
    """The parts ARQC + ARPC and TDES DUKPT are made of (hsm/README.md, "Benchmark")."""
    return {
        "step derive+destroy python-pkcs11": lambda: _py_derive(udk).destroy(),  # type: ignore[attr-defined]
        "step derive+destroy direct, private": lambda: _raw.derive_des2(
            udk, bytes(16), encrypt=True, derive=False).destroy(),
        "step derive+destroy direct, public": lambda: _raw.derive_des2(
            udk, bytes(16), encrypt=True, derive=False, private=False).destroy(),
        "step encrypt direct, session object": lambda: _raw.encrypt(
            sk, bytes(8), Mechanism.DES3_ECB),
        "step encrypt direct, token object": lambda: _raw.encrypt(
            token_key, bytes(8), Mechanism.DES3_ECB),
        "step DUKPT host: NRKGP + block": lambda: dukpt.crypt_pin_block(
            ipek, ksn, block, decrypt=True),
    }


def measure(min_seconds: float = MIN_SECONDS) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cfg = make_token(d, "bench", role="personalisation")  # every command
        with Hsm(cfg) as h:
            devkeys.load(h, tuple(devkeys.TEST_KEYS))
            zpk = devkeys.zpk("visa")
            tpk_block = h.encrypt_pin(devkeys.TPK, PIN, PAN)
            ksn = bytes.fromhex("FFFF9876543210E00007")
            dukpt_block = h.dukpt_encrypt_pin(devkeys.BDK, ksn, PIN, PAN)
            # AES DUKPT: one device's consecutive counters (more KSNs than the derived
            # key cache holds, so it churns as with many devices).
            aes = []
            for c in range(1, 1501):
                aes_ksn = bytes.fromhex("1234567890123456") + c.to_bytes(4, "big")
                aes.append((aes_ksn, h.dukpt_encrypt_pin(devkeys.BDK_AES, aes_ksn, PIN, PAN)))
            cvk = devkeys.cvk("visa")
            cvv = h.generate_cvv(cvk, PAN, "2812", "201")
            mk = devkeys.mkac("visa")
            data = bytes(range(37))  # CVN 10-sized AC data (tags + CVR)
            # One card, a new ATC per call: the card's UDK is a cached handle, each
            # ATC's session key (CVN 18) is derived and destroyed.
            un = bytes.fromhex("1A2B3C4D")  # 9F37 (M/Chip session keys use it)
            arqcs = {cvn: [(i.to_bytes(2, "big"), h.generate_arqc(
                mk, PAN, "00", i.to_bytes(2, "big"), data, cvn=cvn, un=un))
                for i in range(1, 400)] for cvn in (10, 18, 16, 17)}
            # A new card per call: the UDK is derived too (two derivations).
            pans = [f"476173{i:09d}0" for i in range(3000)]
            new_cards = [(p, h.generate_arqc(mk, p, "00", b"\x00\x01", data, cvn=10))
                         for p in pans[:1]]
            zak = devkeys.zak("visa")
            msg = bytes(range(64)) * 4  # a 256-byte ISO 8583 message
            mac = h.generate_mac(zak, msg)
            raw = h._key(zpk).main  # the bare PKCS#11 key object, for the baseline
            # A session object to derive from, made by python-pkcs11 (so both ways can)
            udk = _py_derive(h._key(mk).main, derive=True)
            sk = _raw.derive_des2(udk, bytes(16), encrypt=True, derive=False)
            ipek = bytes.fromhex("6AC292FAA1315B4D858AB3A3D7D5933A")

            ops: dict[str, Callable[[], object]] = {
                BASELINE: lambda: raw.encrypt(
                    bytes(8), mechanism=Mechanism.DES3_ECB),
                "translate_pin TPK->ZPK": lambda: h.translate_pin(
                    tpk_block, PAN, devkeys.TPK, zpk),
                "translate_pin DUKPT->ZPK": lambda: h.translate_pin_dukpt(
                    dukpt_block, ksn, PAN, devkeys.BDK, zpk),
                "translate_pin AES DUKPT->ZPK": _cycle([
                    functools.partial(h.translate_pin_dukpt, b, k, PAN, devkeys.BDK_AES, zpk)
                    for k, b in aes]),
                "verify_cvv": lambda: h.verify_cvv(cvk, PAN, "2812", "201", cvv),
                "verify_arqc + ARPC CVN 10": _cycle([
                    functools.partial(h.verify_arqc, mk, PAN, "00", atc, data, a, arc=b"00",
                                      cvn=10) for atc, a in arqcs[10]]),
                "verify_arqc + ARPC CVN 18": _cycle([
                    functools.partial(h.verify_arqc, mk, PAN, "00", atc, data, a, arc=b"00",
                                      cvn=18) for atc, a in arqcs[18]]),
                "verify_arqc + ARPC CVN 16": _cycle([
                    functools.partial(h.verify_arqc, mk, PAN, "00", atc, data, a, arc=b"00",
                                      cvn=16, un=un) for atc, a in arqcs[16]]),
                "verify_arqc + ARPC CVN 17 (method 2)": _cycle([
                    functools.partial(h.verify_arqc, mk, PAN, "00", atc, data, a,
                                      csu=bytes(4), cvn=17, un=un) for atc, a in arqcs[17]]),
                # ARQC of another card each call (all wrong but the first: the cost is
                # the same, the UDK derivation is what is measured).
                "verify_arqc + ARPC CVN 10, new card": _cycle([
                    functools.partial(h.verify_arqc, mk, p, "00", b"\x00\x01", data,
                                      new_cards[0][1], arc=b"00", cvn=10) for p in pans]),
                "verify_mac retail 256B": lambda: h.verify_mac(zak, msg, mac),
                **_steps(udk, sk, raw, ipek, ksn, dukpt_block),
            }
            rates, ratios = _measure_all(ops, min_seconds)
    floors = {k: {"floor": f, "ratio": round(ratios[k], 3), "ok": ratios[k] >= f}
              for k, f in FLOORS.items()}
    return {
        "benchmark": "hsm",
        "machine": f"{platform.machine()} {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "ops_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratio_to_baseline": {k: round(v, 3) for k, v in ratios.items()},
        "us_per_op": {k: round(1e6 / v, 1) for k, v in rates.items()},
        "floors": floors,
        "floors_ok": all(f["ok"] for f in floors.values()),
    }


def main(json: bool = False) -> int:
    result = measure()
    code = 0 if result["floors_ok"] else 1
    if json:
        print(jsonlib.dumps(result, indent=2))
        return code
    print(f"HSM benchmark (SoftHSM2, one thread) on {result['machine']}")
    print(f"{'operation':<40} {'ops/s':>10} {'us/op':>9} {'x baseline':>11}")
    for name, rate in result["ops_per_s"].items():
        print(f"{name:<40} {rate:>10.0f} {result['us_per_op'][name]:>9.1f} "
              f"{result['ratio_to_baseline'][name]:>11.3f}")
    for name, f in result["floors"].items():
        print(f"floor {name}: {f['ratio']:.3f} >= {f['floor']}: {'ok' if f['ok'] else 'MISSED'}")
    return code


if __name__ == "__main__":
    sys.exit(main("--json" in sys.argv))
