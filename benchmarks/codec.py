"""Codec benchmark: one 0100 in every dialect, decode and encode, against pyiso8583.

    python -m benchmarks.run codec --json

For the same authorization request (21 fields: PAN, track 2, DE55 EMV data, PIN
block, DE48...) each dialect is timed decoding its own wire bytes and encoding the
canonical ``Message``. pyiso8583's own ``default_ascii`` spec, on the equivalent
field dict, is timed in the same run as the baseline: what a dialect costs over the
bare library (typed canonical fields, checks, headers, conversions) is the ratio.

Figures are the median over ``RUNS`` runs of a loop of ``LOOPS`` calls, in µs a call.
"""

from __future__ import annotations

import json as jsonlib
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version

import iso8583
from iso8583.specs import default_ascii

from payswitch.codecs.iso8583 import DIALECTS, Message, get

RUNS = 31
LOOPS = 200

EMV = bytes.fromhex(
    "9F2608" "1122334455667788"        # ARQC
    "9F2701" "80"                      # CID
    "9F100706010A03A0B800"             # IAD
    "9F3704" "0A0B0C0D"                # unpredictable number
    "9F3602" "0012"                    # ATC
    "950500000080009A032511259C0100"   # TVR, date, type
    "5F2A020840820259009F1A020840"     # currency, AIP, country
    "9F02060000000012349F0306000000000000"  # amounts
)

MESSAGE = Message(
    mti="0100", pan="4761739001010010", processing_code="000000", amount_minor=1234,
    transmission_time="1125023000", stan="381274", local_time="023000",
    local_date="1125", local_year="25", expiry="2512", mcc="5411",
    acquirer_country="840", card_sequence="001", acquirer_id="12345678901",
    track2="4761739001010010=25121011758928889", rrn="533002381274",
    terminal_id="TERM0001", merchant_id="MERCHANT0000001",
    merchant_name="CORNER SHOP".ljust(23) + "SPRINGFIELD".ljust(13) + "MAUS",
    additional_data="T0104ABCD", currency="840",
    pin_block=bytes.fromhex("0123456789ABCDEF"), emv=EMV,
)
FIELD_COUNT = sum(
    1 for name in Message.__slots__
    if name not in ("mti", "other", "header", "local_year", "action_code")
    and getattr(MESSAGE, name) is not None
)


def _loop_us(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    for _ in range(LOOPS):
        fn()
    return (time.perf_counter_ns() - start) / LOOPS / 1000


def _time_all(targets: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median µs per call for each target. Runs are interleaved (every target once per
    round) so that load from other processes falls on all of them alike."""
    samples: dict[str, list[float]] = {k: [] for k in targets}
    for _ in range(RUNS):
        for key, fn in targets.items():
            samples[key].append(_loop_us(fn))
    return {k: round(statistics.median(v), 2) for k, v in samples.items()}


def measure() -> dict:
    ascii_dialect = get("iso87ascii")
    baseline_fields = ascii_dialect.to_fields(MESSAGE)
    baseline_wire = bytes(iso8583.encode(dict(baseline_fields), default_ascii)[0])
    targets: dict[str, Callable[[], object]] = {
        "baseline/decode": lambda: iso8583.decode(baseline_wire, default_ascii),
        "baseline/encode": lambda: iso8583.encode(dict(baseline_fields), default_ascii),
    }
    sizes = {"baseline": len(baseline_wire)}
    for name in DIALECTS:
        dialect = get(name)
        wire = dialect.encode(MESSAGE)
        decoded = dialect.decode(wire)
        assert decoded.pan == MESSAGE.pan and decoded.emv == MESSAGE.emv
        sizes[name] = len(wire)
        targets[f"{name}/decode"] = lambda d=dialect, w=wire: d.decode(w)
        targets[f"{name}/encode"] = lambda d=dialect: d.encode(MESSAGE)
    us = _time_all(targets)
    baseline = {
        "spec": "pyiso8583 default_ascii",
        "bytes": sizes["baseline"],
        "decode_us": us["baseline/decode"],
        "encode_us": us["baseline/encode"],
    }
    dialects = {}
    for name in DIALECTS:
        dec, enc = us[f"{name}/decode"], us[f"{name}/encode"]
        dialects[name] = {
            "bytes": sizes[name],
            "decode_us": dec,
            "encode_us": enc,
            "decode_ratio": round(dec / baseline["decode_us"], 2),
            "encode_ratio": round(enc / baseline["encode_us"], 2),
        }
    return {
        "benchmark": "codec",
        "message": {"mti": MESSAGE.mti, "fields": FIELD_COUNT, "emv_bytes": len(EMV)},
        "method": f"median of {RUNS} interleaved runs x {LOOPS} calls, µs per call",
        "baseline": baseline,
        "dialects": dialects,
        "python": platform.python_version(),
        "pyiso8583": version("pyiso8583"),
        "machine": platform.machine(),
    }


def main(json: bool = False) -> None:
    result = measure()
    if json:
        print(jsonlib.dumps(result, ensure_ascii=False))
        return
    b = result["baseline"]
    print(f"codec: {result['message']['fields']}-field 0100, {result['method']}")
    print(f"{'dialect':<26}{'bytes':>6}{'decode µs':>11}{'encode µs':>11}"
          f"{'dec x':>7}{'enc x':>7}")
    print(f"{b['spec']:<26}{b['bytes']:>6}{b['decode_us']:>11}{b['encode_us']:>11}"
          f"{1.0:>7}{1.0:>7}")
    for name, d in result["dialects"].items():
        print(f"{name:<26}{d['bytes']:>6}{d['decode_us']:>11}{d['encode_us']:>11}"
              f"{d['decode_ratio']:>7}{d['encode_ratio']:>7}")
