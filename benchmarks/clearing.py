"""Clearing-file benchmark: presentments written and read per second, per format.

    python -m benchmarks.run clearing --json

One file of ``N`` first presentments (every optional field filled, so Visa writes
TCR0 + TCR1 + TCR5 each) is written and read back by our codecs. In the same run:

- Mastercard IPM (plain VBS and 1014-blocked): cardutil, the independent IPM
  implementation on PyPI, writes the same messages (from the same field values,
  typed as its config wants them, prepared outside the timing) and reads the file;
  the bytes are asserted equal before timing.
- Visa Base II: no independent implementation exists on PyPI; the same-run reference
  is the floor any writer pays, one f-string per 168-byte record with no checks
  (``floor``), and slicing the records back out (``floor`` read).

Figures: median of ``RUNS`` interleaved rounds, presentments per second.
"""

from __future__ import annotations

import io
import json as jsonlib
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date, datetime
from importlib.metadata import version

from cardutil import mciipm
from cardutil.config import config as cardutil_config

from payswitch.codecs.clearing import base2, ipm
from payswitch.codecs.clearing.arn import make_arn
from payswitch.codecs.clearing.model import ClearingFile, Presentment

N = 2000
RUNS = 7
FILE_DATE = date(2026, 11, 27)
BITS = cardutil_config["bit_config"]


def sample() -> ClearingFile:
    items = tuple(Presentment(
        kind=("sale", "sale", "sale", "credit", "cash")[i % 5],
        pan=f"476173900101{i % 10000:04d}", amount_minor=100 + i * 7, currency="840",
        txn_date=date(2026, 11, 26), arn=make_arn("412345", FILE_DATE, i),
        auth_code=f"A{i % 100000:05d}", mcc="5411", merchant_name="CORNER SHOP",
        merchant_city="SPRINGFIELD", merchant_country="USA", terminal_id="TERM0001",
        merchant_id="MERCHANT0000001", transaction_id=f"{i:015d}",
        auth_amount_minor=200 + i * 7, product_id="MCC") for i in range(N))
    return ClearingFile("412345", FILE_DATE, 1, items)


def cardutil_messages(f: ClearingFile) -> list[dict]:
    n = len(f.presentments) + 2
    fields = ([ipm.header_fields(f)]
              + [ipm.presentment_fields(p, i) for i, p in enumerate(f.presentments, 2)]
              + [ipm.trailer_fields(f, n, sum(p.amount_minor for p in f.presentments))])
    out = []
    for fd in fields:
        d: dict = {"MTI": fd["t"]}
        for de, value in fd.items():
            kind = BITS.get(de, {}).get("field_python_type")
            if de == "t":
                continue
            if de == "48":
                d.update({f"PDS{k}": v for k, v in ipm.parse_pds(value, 0).items()})
            elif kind in ("int", "long"):
                d[f"DE{de}"] = int(value)
            elif kind == "datetime":
                d[f"DE{de}"] = datetime.strptime(value, BITS[de]["field_date_format"])
            else:
                d[f"DE{de}"] = value
        out.append(d)
    return out


def cardutil_write(messages: list[dict], blocked: bool) -> bytes:
    buf = io.BytesIO()
    w = mciipm.IpmWriter(buf, encoding="cp500", blocked=blocked)
    for m in messages:
        w.write(dict(m))  # cardutil adds DE48 to the dict it is given
    w.close()
    return buf.getvalue()


def cardutil_read(data: bytes, blocked: bool) -> int:
    return sum(1 for _ in mciipm.IpmReader(io.BytesIO(data), encoding="cp500",
                                           blocked=blocked))


def floor_write(f: ClearingFile) -> bytes:
    return "".join(f"05000{p.pan:<19}{p.arn}{p.amount_minor:012d}".ljust(168) * 3
                   for p in f.presentments).encode("ascii")


def floor_read(data: bytes) -> int:
    return len([data[i:i + 168].decode("ascii") for i in range(0, len(data), 168)])


def _time_all(targets: dict[str, Callable[[], object]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in targets}
    for _ in range(RUNS):
        for key, fn in targets.items():
            start = time.perf_counter()
            fn()
            samples[key].append(N / (time.perf_counter() - start))
    return {k: round(statistics.median(v)) for k, v in samples.items()}


def measure() -> dict:
    f = sample()
    visa = base2.write(f)
    plain, blocked = ipm.write(f), ipm.write(f, blocked=True)
    msgs = cardutil_messages(f)
    assert cardutil_write(msgs, False) == plain and cardutil_write(msgs, True) == blocked
    assert base2.read(visa) == f and ipm.read(blocked, blocked=True) == f
    floor = floor_write(f)
    rate = _time_all({
        "base2/write": lambda: base2.write(f), "base2/read": lambda: base2.read(visa),
        "base2-floor/write": lambda: floor_write(f),
        "base2-floor/read": lambda: floor_read(floor),
        "ipm/write": lambda: ipm.write(f), "ipm/read": lambda: ipm.read(plain),
        "ipm-cardutil/write": lambda: cardutil_write(msgs, False),
        "ipm-cardutil/read": lambda: cardutil_read(plain, False),
        "ipm-blocked/write": lambda: ipm.write(f, blocked=True),
        "ipm-blocked/read": lambda: ipm.read(blocked, blocked=True),
        "ipm-blocked-cardutil/write": lambda: cardutil_write(msgs, True),
        "ipm-blocked-cardutil/read": lambda: cardutil_read(blocked, True),
    })

    def pair(ours: str, ref: str) -> dict:
        return {"write_per_s": rate[f"{ours}/write"], "read_per_s": rate[f"{ours}/read"],
                "reference": ref.split("-")[-1],
                "reference_write_per_s": rate[f"{ref}/write"],
                "reference_read_per_s": rate[f"{ref}/read"],
                "write_ratio": round(rate[f"{ours}/write"] / rate[f"{ref}/write"], 2),
                "read_ratio": round(rate[f"{ours}/read"] / rate[f"{ref}/read"], 2)}

    return {
        "benchmark": "clearing", "presentments": N,
        "bytes": {"base2": len(visa), "ipm": len(plain), "ipm_blocked": len(blocked)},
        "method": f"median of {RUNS} interleaved rounds, presentments per second",
        "base2": pair("base2", "base2-floor"),
        "ipm": pair("ipm", "ipm-cardutil"),
        "ipm_blocked": pair("ipm-blocked", "ipm-blocked-cardutil"),
        "python": platform.python_version(), "cardutil": version("cardutil"),
        "pyiso8583": version("pyiso8583"), "machine": platform.machine(),
    }


def main(json: bool = False) -> None:
    r = measure()
    if json:
        print(jsonlib.dumps(r))
        return
    print(f"clearing: {r['presentments']} presentments, {r['method']}")
    print(f"{'format':<13}{'write/s':>9}{'read/s':>9}  {'reference':<9}{'write/s':>9}"
          f"{'read/s':>9}{'w x':>6}{'r x':>6}")
    for name in ("base2", "ipm", "ipm_blocked"):
        d = r[name]
        print(f"{name:<13}{d['write_per_s']:>9}{d['read_per_s']:>9}  {d['reference']:<9}"
              f"{d['reference_write_per_s']:>9}{d['reference_read_per_s']:>9}"
              f"{d['write_ratio']:>6}{d['read_ratio']:>6}")
