"""Cut-off, presentment selection and `payswitch clearing build --date D --out DIR`.

A cycle is (network link, date). Closing it, in one transaction under an advisory
lock, records the cycle and turns every authorization of that link that is approved,
held up to the cut-off and not fully reversed (its hold is pending, not yet expired
at the cut-off, or posted) and not yet presented into a ``presentments`` row with its
final amount: the posted amount after a completion for less, else the held amount.
Voided and expired holds, declines and on-us authorizations (no network link) are not
presented. ``presentments.payment_id`` is the primary key, so a payment is presented
once, across restarts and re-runs; a re-run of a closed date selects nothing new and
re-writes the file from the same rows, byte for byte.

The PAN and merchant data are not in the ledger (a PAN never is, in clear): a
``DetailsSource`` supplies them per payment (for the switch that would be the
journal's HSM-encrypted PAN, decrypted in the HSM, and its merchant table; not
written yet). The CLI takes it as ``--details module:factory`` or
``$PAYSWITCH_CLEARING_DETAILS``, as ``ledger verify`` takes its MAC provider.

Files are written atomically: ``.NAME.tmp``, fsync, rename, fsync of the directory.
A file that exists with other bytes is an error, never overwritten.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, cast

import psycopg

from payswitch.codecs.clearing import base2, ipm
from payswitch.codecs.clearing.arn import make_arn
from payswitch.codecs.clearing.errors import ClearingError
from payswitch.codecs.clearing.model import ClearingFile, Kind, Presentment

from .types import LedgerError

FORMATS = {"base2": ".ctf", "ipm": ".ipm", "ipm-blocked": ".ipm"}
CASH_CODES = ("01", "12", "17")
CREDIT_CODES = ("20",)


@dataclass(frozen=True)
class Network:
    link: str  # the issuer link name the approvals carry ("visa", "mastercard")
    fmt: str  # base2 | ipm | ipm-blocked
    acquirer_bin: str  # 6 digits: ARN and file sender


@dataclass(frozen=True)
class CardDetails:
    """What a presentment needs that the ledger does not hold."""

    pan: str
    mcc: str
    merchant_name: str
    merchant_city: str
    merchant_country: str
    merchant_id: str = ""
    product_id: str = ""

    def __repr__(self) -> str:
        return f"CardDetails(pan=<masked>, mcc={self.mcc!r}, merchant={self.merchant_name!r})"


@dataclass(frozen=True)
class Selected:
    """One presentments row."""

    payment_id: int
    hold_id: int
    network: str
    seq: int
    kind: str
    amount_minor: int
    auth_amount_minor: int | None
    ledger: int
    auth_code: str
    txn_date: date
    arn: str
    terminal_id: str


DetailsSource = Callable[[Sequence[Selected]], Mapping[int, CardDetails]]


def migrate(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('payswitch.clearing.migrate'))")
        conn.execute(files("payswitch.ledger").joinpath("clearing.sql").read_text())


def cutoff_ns(cycle_date: date, at: time = time(0)) -> int:
    """The cut-off of a cycle: ``at`` on the day after ``cycle_date`` (UTC); midnight
    by default, so the cycle holds that date's authorizations."""
    end = datetime.combine(cycle_date + timedelta(days=1), at, tzinfo=UTC)
    return int(end.timestamp()) * 1_000_000_000


_CANDIDATES = """
select a.payment_id, a.transfer_id, t.amount, t.ledger, t.ts, a.payload,
       (select coalesce(sum(x.amount), 0) from transfers x
         where x.pending_id = t.id and (x.flags & 4) <> 0) as posted,
       (select r.payload from events r
         where r.payment_id = a.payment_id and r.type = 'received'
         order by r.seq limit 1) as received
  from events a
  join transfers t on t.id = a.transfer_id
  join pending_transfers p on p.id = t.id
 where a.type = 'approved'
   and t.ts < %(cutoff)s
   and (p.state = 'posted'
        or (p.state = 'pending' and (p.expires_at_ns is null or p.expires_at_ns > %(cutoff)s)))
   and (a.payload::jsonb ->> 'link') = %(link)s
   and not exists (select 1 from presentments x where x.payment_id = a.payment_id)
 order by t.ts, a.payment_id
"""


def _kind(received: dict) -> str:
    code = str(received.get("processing_code") or "")[:2]
    return "credit" if code in CREDIT_CODES else "cash" if code in CASH_CODES else "sale"


def close_cycle(conn: psycopg.Connection, net: Network, cycle_date: date,
                cutoff: int) -> int:
    """Closes (net.link, cycle_date) once; returns the presentments it added (0 when the
    cycle was closed before)."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('payswitch.clearing.cycle'))")
        new = conn.execute(
            "insert into clearing_cycles (network, cycle_date, cutoff_ns) values (%s, %s, %s)"
            " on conflict do nothing returning 1", (net.link, cycle_date, cutoff)).fetchone()
        if new is None:
            return 0
        row = conn.execute("select coalesce(max(seq), 0) from presentments where"
                           " network = %s", (net.link,)).fetchone()
        last = row[0] if row else 0
        rows = conn.execute(_CANDIDATES, {"cutoff": cutoff, "link": net.link}).fetchall()
        values = []
        for i, (pid, hold, held, ledger, ts, approved, posted, received) in enumerate(
                rows, start=last + 1):
            approved = json.loads(approved)
            received = json.loads(received) if received else {}
            final = posted or held
            values.append((
                pid, hold, net.link, cycle_date, i, _kind(received), final,
                held if final != held else None, ledger,
                str(approved.get("auth_code") or "").upper(),
                datetime.fromtimestamp(ts / 1e9, UTC).date(),
                make_arn(net.acquirer_bin, cycle_date, i),
                str(received.get("terminal_id") or "")))
        with conn.cursor() as cur:
            cur.executemany(
                "insert into presentments (payment_id, hold_id, network, cycle_date, seq,"
                " kind, amount_minor, auth_amount_minor, ledger, auth_code, txn_date, arn,"
                " terminal_id) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                values)
        return len(values)


def presented(conn: psycopg.Connection, link: str, cycle_date: date) -> list[Selected]:
    rows = conn.execute(
        "select payment_id, hold_id, network, seq, kind, amount_minor, auth_amount_minor,"
        " ledger, auth_code, txn_date, arn, terminal_id from presentments"
        " where network = %s and cycle_date = %s order by seq", (link, cycle_date)).fetchall()
    return [Selected(r[0].int, r[1].int, *r[2:]) for r in rows]


def to_file(net: Network, cycle_date: date, rows: Sequence[Selected],
            details: Mapping[int, CardDetails]) -> ClearingFile:
    items = []
    for r in rows:
        d = details.get(r.payment_id)
        if d is None:
            raise LedgerError(f"no card details for payment {uuid.UUID(int=r.payment_id)}")
        items.append(Presentment(
            kind=cast(Kind, r.kind), pan=d.pan, amount_minor=r.amount_minor,
            currency=f"{r.ledger:03d}",
            txn_date=r.txn_date, arn=r.arn, auth_code=r.auth_code, mcc=d.mcc,
            merchant_name=d.merchant_name, merchant_city=d.merchant_city,
            merchant_country=d.merchant_country, terminal_id=r.terminal_id,
            merchant_id=d.merchant_id, auth_amount_minor=r.auth_amount_minor,
            product_id=d.product_id))
    return ClearingFile(sender_id=net.acquirer_bin, file_date=cycle_date, file_seq=1,
                        presentments=tuple(items))


def encode(net: Network, f: ClearingFile) -> bytes:
    if net.fmt == "base2":
        return base2.write(f)
    return ipm.write(f, blocked=net.fmt == "ipm-blocked")


def file_name(net: Network, cycle_date: date) -> str:
    return f"{net.link}-{cycle_date:%Y%m%d}-001{FORMATS[net.fmt]}"


def write_atomic(path: Path, data: bytes) -> bool:
    """Writes ``data`` to ``path`` so that a crash leaves no file or the whole one.
    Returns False when the same bytes are already there; raises when other bytes are."""
    if path.exists():
        if path.read_bytes() == data:
            return False
        raise LedgerError(f"{path.name} exists with other content; not overwritten")
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    return True


def build(conn: psycopg.Connection, networks: Sequence[Network], cycle_date: date,
          out_dir: Path, details: DetailsSource, cutoff: int | None = None) -> list[dict]:
    """Closes each network's cycle, then writes its file. Safe to re-run at any point."""
    migrate(conn)
    cutoff = cutoff_ns(cycle_date) if cutoff is None else cutoff
    out_dir.mkdir(parents=True, exist_ok=True)
    report = []
    for net in networks:
        added = close_cycle(conn, net, cycle_date, cutoff)
        rows = presented(conn, net.link, cycle_date)
        f = to_file(net, cycle_date, rows, details(rows) if rows else {})
        path = out_dir / file_name(net, cycle_date)
        written = write_atomic(path, encode(net, f))
        report.append({"network": net.link, "format": net.fmt, "file": path.name,
                       "presentments": len(rows), "new": added, "written": written,
                       "amount_total_minor": sum(r.amount_minor for r in rows)})
    return report


# -- CLI ------------------------------------------------------------------------------

DEFAULT_NETWORKS = ("visa=base2:400000", "mastercard=ipm-blocked:510000")
DETAILS_ENV = "PAYSWITCH_CLEARING_DETAILS"


def parse_network(text: str) -> Network:
    link, _, rest = text.partition("=")
    fmt, _, bin6 = rest.partition(":")
    if not link or fmt not in FORMATS or not (len(bin6) == 6 and bin6.isdigit()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not LINK=FORMAT:BIN (FORMAT one of {', '.join(FORMATS)})")
    return Network(link, fmt, bin6)


def load_details(spec: str) -> DetailsSource:
    module, _, name = spec.partition(":")
    if not name:
        raise LedgerError("--details wants module:factory")
    return getattr(importlib.import_module(module), name)()


def register(sub: Any) -> None:
    b = sub.add_parser("build", help="close a clearing cycle and write its files")
    b.add_argument("--date", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    b.add_argument("--out", required=True, type=Path, help="directory for the files")
    b.add_argument("--network", action="append", type=parse_network, metavar="LINK=FMT:BIN",
                   help=f"issuer link -> file format and acquirer BIN (default: "
                        f"{' '.join(DEFAULT_NETWORKS)}; test BINs)")
    b.add_argument("--cutoff", type=time.fromisoformat, default=time(0),
                   help="cut-off time (UTC) on the day after --date; default 00:00")
    b.add_argument("--details", default=os.environ.get(DETAILS_ENV), metavar="MODULE:FACTORY",
                   help=f"card and merchant details source (a factory returning the "
                        f"callable); default ${DETAILS_ENV}")
    b.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: $PAYSWITCH_PG_DSN)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    nets = args.network or [parse_network(n) for n in DEFAULT_NETWORKS]
    dsn = args.dsn or os.environ.get("PAYSWITCH_PG_DSN")
    try:
        if not dsn:
            raise LedgerError("no database: give --dsn or set PAYSWITCH_PG_DSN")
        if not args.details:
            raise LedgerError(f"no card details source: give --details or set {DETAILS_ENV}")
        details = load_details(args.details)
        with psycopg.connect(dsn, autocommit=True) as conn:
            cutoff = cutoff_ns(args.date, args.cutoff)
            report = build(conn, nets, args.date, args.out, details, cutoff)
    except (LedgerError, ClearingError, psycopg.Error, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"date": args.date.isoformat(), "files": report}))
    else:
        for r in report:
            print(f"{r['file']}: {r['presentments']} presentments ({r['new']} new), "
                  f"amount total {r['amount_total_minor']}"
                  f"{'' if r['written'] else ' (unchanged)'}")
    return 0
