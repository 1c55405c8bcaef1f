"""`payswitch recon --date D --dir DIR [--json]` and `payswitch recon --explain KEY
--note TEXT`.

DIR holds what the clearing day left there: our outgoing files (``LINK-YYYYMMDD-001``
``.ctf`` Base II / ``.ipm`` IPM, as ``clearing build`` names them) and the networks'
settlement reports (``LINK-YYYYMMDD.settlement.json``). Exit codes: 0 every mismatch
explained, 1 an unexplained one, 3 error. With a MAC (``--mac-provider``,
``--mac-key-file`` or ``$PAYSWITCH_EVENT_MAC_KEY``, as ``ledger verify``) each
mismatch is also written as a ``recon_mismatch`` event; ``--metrics-file`` writes the
gauges in Prometheus text format (for a textfile collector).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from payswitch.codecs.clearing.errors import ClearingError
from payswitch.codecs.clearing.model import ClearingFile

from . import chargebacks, recon
from .clearing_cli import read_file
from .cli import DEFAULT_KEY_ENV, mac_from_args
from .store import Ledger
from .types import LedgerError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("recon", help="reconcile a clearing date (exit 1 on a mismatch)")
    p.add_argument("--date", type=date.fromisoformat, help="YYYY-MM-DD")
    p.add_argument("--dir", type=Path, help="the day's clearing files and settlement reports")
    p.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: $PAYSWITCH_PG_DSN)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--metrics-file", type=Path, help="write the gauges here (Prometheus text)")
    p.add_argument("--explain", metavar="KEY", help="mark a mismatch (its key) as explained")
    p.add_argument("--note", default="", help="why (with --explain)")
    p.add_argument("--mac-provider", metavar="MODULE:FACTORY")
    p.add_argument("--mac-key-file", metavar="PATH")
    p.add_argument("--mac-key-env", metavar="VAR", default=DEFAULT_KEY_ENV)
    p.set_defaults(func=cmd_recon)


def load_dir(d: Path, day: date) -> tuple[dict[str, list[ClearingFile]], dict[str, Any]]:
    sent: dict[str, list[ClearingFile]] = {}
    reports: dict[str, Any] = {}
    stamp = f"{day:%Y%m%d}"
    for path in sorted(d.iterdir()):
        link, _, rest = path.name.partition(f"-{stamp}")
        if not link or not rest:
            continue
        if rest == ".settlement.json":
            reports[link] = json.loads(path.read_text())
        elif rest.startswith("-0") and path.suffix in (".ctf", ".ipm"):
            sent.setdefault(link, []).append(read_file(path.read_bytes())[1])
    return sent, reports


def cmd_recon(args: argparse.Namespace) -> int:
    dsn = args.dsn or os.environ.get("PAYSWITCH_PG_DSN")
    try:
        if not dsn:
            raise LedgerError("no database: give --dsn or set PAYSWITCH_PG_DSN")
        with psycopg.connect(dsn, autocommit=True) as conn:
            chargebacks.migrate(conn)
            if args.explain:
                conn.execute("insert into recon_explanations (key, note) values (%s, %s)"
                             " on conflict (key) do update set note = excluded.note",
                             (args.explain, args.note or "explained"))
                print(f"explained: {args.explain}")
                return 0
            if args.date is None or args.dir is None:
                raise LedgerError("give --date and --dir (or --explain KEY)")
            sent, reports = load_dir(args.dir, args.date)
            result = recon.reconcile(conn, args.date, sent, reports, now_ns=time.time_ns())
        mac = mac_from_args(args)
        if mac is not None:
            with Ledger(dsn, mac=mac) as led:
                recon.record_events(led, result)
        if args.metrics_file:
            args.metrics_file.write_text(recon.metrics_text(result))
    except (LedgerError, ClearingError, psycopg.Error, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(json.dumps(result.to_dict()) if args.json else result.to_text())
    return 0 if result.ok else 1
