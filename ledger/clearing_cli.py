"""`payswitch clearing show FILE | build --date D --out DIR`.

``show`` reads a Visa Base II or Mastercard IPM file (format sniffed, or ``--format``),
checks it whole (trailers, counts, amounts) and lists its presentments with masked
PANs; exit 1 and the reader's error (naming the record) when the file is bad.
``build`` is in ``ledger/clearing_build.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from payswitch.codecs.clearing import base2, ipm
from payswitch.codecs.clearing.errors import ClearingError
from payswitch.codecs.clearing.model import ClearingFile
from payswitch.codecs.clearing.vbs import BLOCK_BYTES, BLOCK_DATA, PAD
from payswitch.codecs.pan import mask_pan
from payswitch.ledger import clearing_build

FORMATS = ("auto", "base2", "ipm", "ipm-blocked")
MAX_FILE_BYTES = 512 * 1024 * 1024  # refuse to read anything larger into memory


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("clearing", help="clearing files: show, build")
    sub = p.add_subparsers(dest="clearing_command", required=True)
    s = sub.add_parser("show", help="list a clearing file's records (PANs masked)")
    s.add_argument("file", type=Path)
    s.add_argument("--format", choices=FORMATS, default="auto")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)
    clearing_build.register(sub)


def sniff(data: bytes) -> str:
    if data[:2] == b"90":
        return "base2"
    if len(data) % BLOCK_BYTES == 0 and data[BLOCK_DATA:BLOCK_BYTES] == PAD * 2:
        return "ipm-blocked"
    return "ipm"


def read_file(data: bytes, fmt: str = "auto") -> tuple[str, ClearingFile]:
    fmt = sniff(data) if fmt == "auto" else fmt
    if fmt == "base2":
        return fmt, base2.read(data)
    return fmt, ipm.read(data, blocked=fmt == "ipm-blocked")


def rows(f: ClearingFile) -> list[dict]:
    return [{"n": i, "kind": p.kind, "pan": mask_pan(p.pan), "amount_minor": p.amount_minor,
             "currency": p.currency, "date": p.txn_date.isoformat(), "arn": p.arn,
             "auth_code": p.auth_code, "mcc": p.mcc, "merchant": p.merchant_name,
             "city": p.merchant_city, "country": p.merchant_country,
             "terminal_id": p.terminal_id, "merchant_id": p.merchant_id,
             "transaction_id": p.transaction_id, "auth_amount_minor": p.auth_amount_minor,
             "product_id": p.product_id}
            for i, p in enumerate(f.presentments, start=1)]


def summary(fmt: str, f: ClearingFile) -> dict:
    return {"format": fmt, "sender_id": f.sender_id, "file_date": f.file_date.isoformat(),
            "file_seq": f.file_seq, "test": f.test, "presentments": len(f.presentments),
            "amount_total_minor": sum(p.amount_minor for p in f.presentments)}


def cmd_show(args: argparse.Namespace) -> int:
    try:
        size = args.file.stat().st_size
        if size > MAX_FILE_BYTES:
            print(f"error: {args.file} is over {MAX_FILE_BYTES} bytes", file=sys.stderr)
            return 1
        fmt, f = read_file(args.file.read_bytes(), args.format)
    except (OSError, ClearingError) as e:
        print(f"error: {args.file.name}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**summary(fmt, f), "records": rows(f)}))
        return 0
    s = summary(fmt, f)
    print(f"{fmt} file {s['file_seq']:03d} of {s['file_date']} from {s['sender_id']}"
          f"{' (test)' if f.test else ''}: {s['presentments']} presentments, "
          f"amount total {s['amount_total_minor']} (minor units)")
    print(f"{'#':>4}  {'kind':6} {'pan':19} {'amount':>12} ccy  {'date':10} "
          f"{'arn':23} auth   mcc  merchant")
    for r in rows(f):
        print(f"{r['n']:>4}  {r['kind']:6} {r['pan']:19} {r['amount_minor']:>12} "
              f"{r['currency']}  {r['date']} {r['arn']} {r['auth_code']} {r['mcc']} "
              f"{r['merchant']}, {r['city']} {r['country']}")
    return 0
