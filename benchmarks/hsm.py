"""HSM operations per second on SoftHSM2, one thread, one session, with a bare
PKCS#11 DES3-ECB encrypt timed in the same run as the baseline.

``python -m benchmarks.run hsm [--json]``. Uses a throwaway token in a temp dir and
the TEST keys of ``payswitch.hsm.devkeys``.
"""

from __future__ import annotations

import json as jsonlib
import platform
import sys
import tempfile
import time
from collections.abc import Callable

from pkcs11 import Mechanism

from payswitch.hsm import Hsm, devkeys, make_token

MIN_SECONDS = 1.0
PAN = "4761739001010010"
PIN = "1234"


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


def measure(min_seconds: float = MIN_SECONDS) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cfg = make_token(d, "bench")
        with Hsm(cfg) as h:
            devkeys.load(h, tuple(devkeys.TEST_KEYS))
            zpk = devkeys.zpk("visa")
            tpk_block = h.encrypt_pin(devkeys.TPK, PIN, PAN)
            ksn = bytes.fromhex("FFFF9876543210E00007")
            dukpt_block = h.dukpt_encrypt_pin(devkeys.BDK, ksn, PIN, PAN)
            aes_ksn = bytes.fromhex("123456789012345600000007")  # 3 counter bits set
            aes_block = h.dukpt_encrypt_pin(devkeys.BDK_AES, aes_ksn, PIN, PAN)
            cvk = devkeys.cvk("visa")
            cvv = h.generate_cvv(cvk, PAN, "2812", "201")
            mk = devkeys.mkac("visa")
            atc, data = b"\x00\x2a", bytes(range(29))  # CVN 10-sized AC data
            arqc = h.generate_arqc(mk, PAN, "00", atc, data)
            zak = devkeys.zak("visa")
            msg = bytes(range(64)) * 4  # a 256-byte ISO 8583 message
            mac = h.generate_mac(zak, msg)
            raw = h._key(zpk).main  # the bare PKCS#11 key object, for the baseline

            ops: dict[str, Callable[[], object]] = {
                "des3_ecb_encrypt (baseline)": lambda: raw.encrypt(
                    bytes(8), mechanism=Mechanism.DES3_ECB),
                "translate_pin TPK->ZPK": lambda: h.translate_pin(
                    tpk_block, PAN, devkeys.TPK, zpk),
                "translate_pin DUKPT->ZPK": lambda: h.translate_pin_dukpt(
                    dukpt_block, ksn, PAN, devkeys.BDK, zpk),
                "translate_pin AES DUKPT->ZPK": lambda: h.translate_pin_dukpt(
                    aes_block, aes_ksn, PAN, devkeys.BDK_AES, zpk),
                "verify_cvv": lambda: h.verify_cvv(cvk, PAN, "2812", "201", cvv),
                "verify_arqc + ARPC": lambda: h.verify_arqc(
                    mk, PAN, "00", atc, data, arqc, arc=b"00"),
                "verify_mac retail 256B": lambda: h.verify_mac(zak, msg, mac),
            }
            rates = {name: _rate(fn, min_seconds) for name, fn in ops.items()}
    base = rates["des3_ecb_encrypt (baseline)"]
    return {
        "benchmark": "hsm",
        "machine": f"{platform.machine()} {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "ops_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratio_to_baseline": {k: round(v / base, 3) for k, v in rates.items()},
        "us_per_op": {k: round(1e6 / v, 1) for k, v in rates.items()},
    }


def main(json: bool = False) -> int:
    result = measure()
    if json:
        print(jsonlib.dumps(result, indent=2))
        return 0
    print(f"HSM benchmark (SoftHSM2, one thread) on {result['machine']}")
    print(f"{'operation':<30} {'ops/s':>10} {'us/op':>9} {'x baseline':>11}")
    for name, rate in result["ops_per_s"].items():
        print(f"{name:<30} {rate:>10.0f} {result['us_per_op'][name]:>9.1f} "
              f"{result['ratio_to_baseline'][name]:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main("--json" in sys.argv))
