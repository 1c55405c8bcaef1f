"""Reconciliation of one clearing date: authorizations and ledger holds, our
presentments (the ``presentments`` rows and the files we actually sent), the networks'
settlement reports and their chargebacks, matched by ARN (each presentment row joins
its payment's approval and hold), approval code and amount.

Mismatch classes, each to the cent (``amount_minor`` in the currency's minor units):

- ``presented_without_authorization``: a record we sent has no presentment row with
  its ARN and approval code (amount: the record's);
- ``authorized_never_presented``: an approved off-us hold of the date was never
  presented and expired (the hold's);
- ``amount_differs``: the network settled an ARN for another amount than we
  presented, or the ledger posted another amount (settled - presented);
- ``duplicate_presentment``: an ARN more than once in what we sent; the network's
  ``duplicate_arn`` rejection of the copy belongs to it (the extra copies');
- ``rejected_by_network``: a record the network rejected (reason in ``detail``), or
  every record of a file it rejected whole (the record's);
- ``settled_differs``: a network's net for a currency is not its accepted items less
  interchange and scheme fees, or the ledger's settlement cash leg is not that net
  (reported - expected);
- ``chargeback_without_original``: a chargeback whose ARN we never presented;
- ``chargeback``: a chargeback recorded against its original (merchant liability
  moved): explained by nature (the chargeback's amount).

A mismatch is explained when ``recon_explanations`` holds its key (``payswitch recon
explain KEY --note``) or its class is ``chargeback``; the run fails (exit 1) while any
is unexplained. Each mismatch is a ``recon_mismatch`` event in the ledger (id derived
from its key and date: a re-run writes nothing new) and a sample of the
``payswitch_recon_mismatches`` / ``payswitch_recon_mismatch_amount_minor`` gauges.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import psycopg

from payswitch.codecs.clearing.model import ClearingFile

from .clearing_build import cutoff_ns
from .store import Ledger
from .types import Event

CLASSES = ("presented_without_authorization", "authorized_never_presented",
           "amount_differs", "duplicate_presentment", "rejected_by_network",
           "settled_differs", "chargeback_without_original", "chargeback")
EXPLAINED_BY_NATURE = frozenset({"chargeback"})


@dataclass(frozen=True)
class Mismatch:
    cls: str
    network: str
    arn: str
    currency: str  # ISO 4217 numeric
    amount_minor: int
    detail: str = ""
    payment_id: str | None = None
    explained: bool = False

    @property
    def key(self) -> str:
        return f"{self.cls}|{self.network}|{self.arn or self.currency}"


@dataclass
class Result:
    day: date
    mismatches: list[Mismatch]

    @property
    def ok(self) -> bool:
        return all(m.explained for m in self.mismatches)

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for m in self.mismatches:
            out[m.cls][m.currency] += m.amount_minor
        return {k: dict(v) for k, v in out.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.day.isoformat(), "ok": self.ok,
                "unexplained": sum(not m.explained for m in self.mismatches),
                "counts": dict(Counter(m.cls for m in self.mismatches)),
                "totals": self.totals(),
                "mismatches": [{**asdict(m), "key": m.key} for m in self.mismatches]}

    def to_text(self) -> str:
        lines = [f"reconciliation {self.day}: {len(self.mismatches)} mismatch(es), "
                 f"{sum(not m.explained for m in self.mismatches)} unexplained"]
        for m in self.mismatches:
            lines.append(f"  {'explained  ' if m.explained else 'UNEXPLAINED'} {m.cls} "
                         f"{m.network} {m.arn or '-'} {m.currency} {m.amount_minor:+d}"
                         f"{' (' + m.detail + ')' if m.detail else ''}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Presented:
    payment_id: str
    network: str
    arn: str
    amount_minor: int
    currency: str
    auth_code: str
    kind: str
    posted_minor: int | None  # the hold's posted amount, None while pending


_PRESENTED = """
select p.payment_id::text, p.network, p.arn, p.amount_minor, p.ledger, p.auth_code, p.kind,
       (select sum(x.amount) from transfers x
         where x.pending_id = p.hold_id and (x.flags & 4) <> 0)
  from presentments p where p.cycle_date = %s
"""

_NEVER_PRESENTED = """
select a.payment_id::text, a.payload::jsonb ->> 'link', t.amount, t.ledger
  from events a
  join transfers t on t.id = a.transfer_id
  join pending_transfers s on s.id = t.id
 where a.type = 'approved' and (a.payload::jsonb ->> 'link') is not null
   and t.ts >= %(start)s and t.ts < %(end)s
   and (s.state = 'expired' or (s.state = 'pending' and s.expires_at_ns <= %(now)s))
   and not exists (select 1 from presentments x where x.payment_id = a.payment_id)
 order by t.ts
"""


def _sign(kind: str) -> int:
    return -1 if kind == "credit" else 1


def reconcile(conn: psycopg.Connection, day: date, sent: Mapping[str, Sequence[ClearingFile]],
              reports: Mapping[str, Mapping[str, Any]], *, now_ns: int) -> Result:
    """``sent``: network -> the files we sent for ``day``; ``reports``: network -> its
    settlement report (JSON dict)."""
    presented = [Presented(r[0], r[1], r[2], r[3], f"{r[4]:03d}", r[5], r[6],
                           None if r[7] is None else int(r[7]))
                 for r in conn.execute(_PRESENTED, (day,)).fetchall()]
    by_arn = {p.arn: p for p in presented}
    out: list[Mismatch] = []
    dup_arns: set[str] = set()
    for network, files in sorted(sent.items()):
        records = [p for f in files for p in f.presentments]
        for arn, n in Counter(p.arn for p in records).items():
            if n > 1:
                first = next(p for p in records if p.arn == arn)
                dup_arns.add(arn)
                out.append(Mismatch("duplicate_presentment", network, arn, first.currency,
                                    first.amount_minor * (n - 1), f"{n} records",
                                    _pid(by_arn, arn)))
        seen: set[str] = set()
        for p in records:
            ours: Presented | None = by_arn.get(p.arn)
            if p.arn in seen:
                continue
            seen.add(p.arn)
            if ours is None or ours.network != network or ours.auth_code != p.auth_code:
                out.append(Mismatch("presented_without_authorization", network, p.arn,
                                    p.currency, p.amount_minor,
                                    "no presentment row" if ours is None
                                    else "approval code differs"))
    for q in presented:
        if q.posted_minor is not None and q.posted_minor != q.amount_minor:
            out.append(Mismatch("amount_differs", q.network, q.arn, q.currency,
                                q.posted_minor - q.amount_minor, "ledger posted",
                                q.payment_id))
    for network, rep in sorted(reports.items()):
        out += _against_report(network, rep, by_arn, dup_arns, sent.get(network, ()))
    start = cutoff_ns(day) - 86_400 * 10**9
    for pid, link, amount, ledger in conn.execute(
            _NEVER_PRESENTED, {"start": start, "end": cutoff_ns(day), "now": now_ns}):
        out.append(Mismatch("authorized_never_presented", str(link), "", f"{ledger:03d}",
                            int(amount), "hold expired", pid))
    out += _chargebacks(conn, by_arn)
    out += _settled_in_ledger(conn, day, reports)
    return Result(day, _explain(conn, out))


def _pid(by_arn: Mapping[str, Presented], arn: str) -> str | None:
    p = by_arn.get(arn)
    return p.payment_id if p else None


def _against_report(network: str, rep: Mapping[str, Any], by_arn: Mapping[str, Presented],
                    dup_arns: set[str], files: Sequence[ClearingFile]) -> list[Mismatch]:
    out: list[Mismatch] = []
    if rep.get("file_error"):
        for f in files:
            for p in f.presentments:
                out.append(Mismatch("rejected_by_network", network, p.arn, p.currency,
                                    p.amount_minor, "file rejected", _pid(by_arn, p.arn)))
        return out
    sent = {p.arn: p for f in files for p in f.presentments}
    for r in rep.get("rejected", ()):
        if r["reason"] == "duplicate_arn" and r["arn"] in dup_arns:
            continue  # the copy of a duplicate presentment: reported as that
        rec = sent.get(r["arn"])
        out.append(Mismatch("rejected_by_network", network, r["arn"],
                            rec.currency if rec else "", rec.amount_minor if rec else 0,
                            r["reason"], _pid(by_arn, r["arn"])))
    gross: dict[str, int] = defaultdict(int)
    for a in rep.get("accepted", ()):
        gross[a["currency"]] += _sign(a["kind"]) * (a["amount_minor"] - a["interchange_minor"])
        ours = by_arn.get(a["arn"])
        if ours is not None and ours.amount_minor != a["amount_minor"]:
            out.append(Mismatch("amount_differs", network, a["arn"], a["currency"],
                                a["amount_minor"] - ours.amount_minor, "network settled",
                                ours.payment_id))
    scheme = rep.get("scheme_fee_minor") or {}
    for ccy, net in sorted(rep.get("net_minor", {}).items()):
        expected = gross.get(ccy, 0) - int(scheme.get(ccy, 0))
        if net != expected:
            out.append(Mismatch("settled_differs", network, "", ccy, net - expected,
                                f"net {net}, items give {expected}"))
    return out


def _chargebacks(conn: psycopg.Connection, by_arn: Mapping[str, Presented]) -> list[Mismatch]:
    if conn.execute("select to_regclass('chargebacks')").fetchone() == (None,):
        return []
    out = []
    for arn, network, pid, amount, ledger, reason, state in conn.execute(
            "select arn, network, payment_id::text, amount_minor, ledger, reason_code, state"
            " from chargebacks order by arn"):
        if state == "unmatched":
            out.append(Mismatch("chargeback_without_original", network, arn, f"{ledger:03d}",
                                amount, f"reason {reason}"))
        elif arn in by_arn:  # this date's presentment
            out.append(Mismatch("chargeback", network, arn, f"{ledger:03d}", amount,
                                f"reason {reason}, {state}", pid))
    return out


def _settled_in_ledger(conn: psycopg.Connection, day: date,
                       reports: Mapping[str, Mapping[str, Any]]) -> list[Mismatch]:
    out = []
    for (payload,) in conn.execute("select payload from events where type = 'settled'"
                                   " and payload::jsonb ->> 'date' = %s", (day.isoformat(),)):
        p = json.loads(payload)
        rep = reports.get(p["network"])
        if rep is None:
            continue
        net = int(rep.get("net_minor", {}).get(p["currency"], 0))
        if int(p.get("cash", 0)) != net:
            out.append(Mismatch("settled_differs", p["network"], "", p["currency"],
                                int(p.get("cash", 0)) - net, "ledger cash leg"))
    return out


def _explain(conn: psycopg.Connection, ms: list[Mismatch]) -> list[Mismatch]:
    notes: dict[str, str] = {}
    if conn.execute("select to_regclass('recon_explanations')").fetchone() != (None,):
        notes = dict(conn.execute("select key, note from recon_explanations").fetchall())
    out = []
    for m in ms:
        note = notes.get(m.key)
        explained = m.cls in EXPLAINED_BY_NATURE or note is not None
        detail = f"{m.detail}; explained: {note}" if note else m.detail
        out.append(Mismatch(m.cls, m.network, m.arn, m.currency, m.amount_minor, detail,
                            m.payment_id, explained))
    return out


def event_id(day: date, key: str) -> int:
    h = hashlib.sha256(f"payswitch|recon|{day.isoformat()}|{key}".encode()).digest()
    return int.from_bytes(h[:16], "big") or 1


def record_events(led: Ledger, result: Result) -> int:
    """One ``recon_mismatch`` event per mismatch (skipped when already stored)."""
    import uuid
    events = [Event(event_id(result.day, m.key), "recon_mismatch",
                    {"date": result.day.isoformat(), "class": m.cls, "network": m.network,
                     "arn": m.arn, "currency": m.currency, "amount_minor": m.amount_minor,
                     "detail": m.detail, "explained": m.explained},
                    payment_id=uuid.UUID(m.payment_id).int if m.payment_id else None)
              for m in result.mismatches]
    return len(led.append_events(events)) if events else 0


def metrics_text(result: Result) -> str:
    """Prometheus text exposition (for a node-exporter textfile collector)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest
    reg = CollectorRegistry()
    count = Gauge("payswitch_recon_mismatches", "Reconciliation mismatches of the last run",
                  ["class", "explained"], registry=reg)
    amount = Gauge("payswitch_recon_mismatch_amount_minor",
                   "Sum of the mismatches' amounts (minor units) of the last run",
                   ["class", "currency"], registry=reg)
    for cls in CLASSES:
        count.labels(cls, "false").set(0)
        count.labels(cls, "true").set(0)
    for m in result.mismatches:
        count.labels(m.cls, str(m.explained).lower()).inc()
        amount.labels(m.cls, m.currency or "none").inc(m.amount_minor)
    return generate_latest(reg).decode()
