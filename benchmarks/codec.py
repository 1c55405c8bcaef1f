"""Codec benchmark: one 0100 in every dialect, decode and encode, against pyiso8583;
then the four conversions of one authorization as the switch does them.

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

from payswitch.codecs.iso8583 import DIALECTS, Message, get, macing

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


# The four conversions of one authorization in the e2e benchmark's full mode: the
# terminal's 0200 decoded (iso87ascii), the network's 0200 encoded with its MAC
# placeholder (``macing.unsigned``), the network's MACed 0210 decoded and the 0210
# encoded to the terminal. Per network, and their mean ("per authorization": the demo
# routes half the cards to each).
WITHDRAWAL = Message(
    mti="0200", pan="4761730000000011", processing_code="011000", amount_minor=2000,
    transmission_time="1128221518", stan="140892", local_time="221518",
    local_date="1128", expiry="2911", mcc="6011", pos_entry_mode="021",
    acquirer_id="123456", track2="4761730000000011=29112010000000000",
    rrn="533002381274", terminal_id="DEMO0001", merchant_id="DEMOMERCHANT001",
    merchant_name="PAYSWITCH DEMO ATM        SPRINGFIELD US", currency="840",
    pin_block=bytes.fromhex("4A58B791DF6AF1D8"))
NETWORKS = ("visa", "mastercard")


def _authorization_targets() -> dict[str, Callable[[], object]]:
    terminal = get("iso87ascii")
    request = terminal.encode(WITHDRAWAL)
    out = WITHDRAWAL.replace(stan="000123", transmission_time="1128221519",
                             pin_block=bytes(8))
    answer = WITHDRAWAL.replace(mti="0210", response_code="00", auth_code="123456",
                                track2=None, pin_block=None, pos_entry_mode=None,
                                expiry=None, mcc=None, merchant_name=None)
    targets: dict[str, Callable[[], object]] = {
        "terminal/decode 0200": lambda: terminal.decode(request),
        "terminal/encode 0210": lambda: terminal.encode(answer),
    }
    for name in NETWORKS:
        dialect = get(name)
        body, hex_form = macing.unsigned(dialect, out)
        reply = dialect.encode(answer.replace(stan=out.stan, mac=bytes(range(8))))
        targets[f"{name}/encode 0200 (MAC input)"] = (
            lambda d=dialect: macing.unsigned(d, out))
        targets[f"{name}/decode 0210"] = lambda d=dialect, w=reply: d.decode(w)
    return targets


def _per_authorization(us: dict[str, float]) -> float:
    network = sum(us[f"{n}/encode 0200 (MAC input)"] + us[f"{n}/decode 0210"]
                  for n in NETWORKS) / len(NETWORKS)
    return round(us["terminal/decode 0200"] + us["terminal/encode 0210"] + network, 2)


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
    authorization = _authorization_targets()
    us = _time_all(targets | authorization)
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
        "authorization_us": {k: us[k] for k in authorization}
        | {"per authorization": _per_authorization(us)},
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
    print("the conversions of one authorization (e2e full mode), µs a call:")
    for op, v in result["authorization_us"].items():
        print(f"  {op:<36}{v:>8}")
