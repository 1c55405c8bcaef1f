"""First chargebacks against their originals, and the representment path.

``record(conn, led, ...)`` takes a network's first chargeback (ARN, amount, currency,
reason code; read from its TC15 / 1442 file by ``codecs.clearing.chargeback``) and
finds its original presentment by ARN (``presentments``). With an original it is a
``chargebacks`` row (state ``open``) and a transfer: the network takes the amount back
from us, the merchant owes it (merchant liability):

    debit merchant payable, credit network receivable   (code CHARGEBACK)

with a ``chargeback`` event on the original's payment. Without an original nothing is
moved: the row has no payment (state ``unmatched``) and the reconciliation reports it
(``chargeback_without_original``).

``represent(...)`` answers a chargeback with the merchant's evidence: the money goes
back to the merchant's side, owed by the network again (the reverse transfer, code
REPRESENTMENT, a ``represented`` event), the row's state ``represented``. Each step is
once per ARN: ids derive from (network, ARN, step) through the caller's scheme, and the
row's primary key is the ARN.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import psycopg

from .settlement import CHARGEBACK, REPRESENTMENT, Accounts, Ids
from .store import Ledger, Request
from .types import Event, LedgerError, Transfer


@dataclass(frozen=True)
class Incoming:
    network: str
    arn: str
    amount_minor: int
    currency: int  # ISO 4217 numeric
    reason_code: str


def migrate(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('payswitch.clearing.migrate'))")
        conn.execute(files("payswitch.ledger").joinpath("clearing.sql").read_text())
        conn.execute(files("payswitch.ledger").joinpath("settle.sql").read_text())


def _original(conn: psycopg.Connection, arn: str) -> tuple[uuid.UUID, str] | None:
    row = conn.execute("select payment_id, network from presentments where arn = %s",
                       (arn,)).fetchone()
    return (row[0], row[1]) if row else None


def record(conn: psycopg.Connection, led: Ledger, cb: Incoming, *, accounts: Accounts,
           ids: Ids) -> str:
    """Returns the chargeback's state: ``open`` (matched, money moved), ``unmatched``,
    or the state it already had (a re-run changes nothing)."""
    migrate(conn)
    prior = conn.execute("select state from chargebacks where arn = %s", (cb.arn,)).fetchone()
    if prior:
        return str(prior[0])
    original = _original(conn, cb.arn)
    state = "open" if original and original[1] == cb.network else "unmatched"
    if state == "open":
        assert original is not None
        pid = original[0].int
        t = Transfer(ids("chargeback", cb.network, cb.arn),
                     accounts("merchant_payable", "", cb.currency),
                     accounts("network_receivable", cb.network, cb.currency),
                     cb.amount_minor, cb.currency, CHARGEBACK)
        ev = Event(ids("ev", "chargeback", cb.network, cb.arn), "chargeback",
                   {"arn": cb.arn, "network": cb.network, "amount_minor": cb.amount_minor,
                    "currency": f"{cb.currency:03d}", "reason_code": cb.reason_code},
                   payment_id=pid, transfer_id=t.id)
        [out] = led.submit([Request((t,), (ev,), ())])
        if not out.ok:
            raise LedgerError(f"chargeback {cb.arn}: {out.results[0]}")
    conn.execute(
        "insert into chargebacks (arn, network, payment_id, amount_minor, ledger,"
        " reason_code, state) values (%s, %s, %s, %s, %s, %s, %s) on conflict do nothing",
        (cb.arn, cb.network, original[0] if state == "open" and original else None,
         cb.amount_minor, cb.currency, cb.reason_code, state))
    return state


def represent(conn: psycopg.Connection, led: Ledger, arn: str, *, accounts: Accounts,
              ids: Ids, evidence: str = "") -> str:
    migrate(conn)
    row = conn.execute("select network, payment_id, amount_minor, ledger, state from"
                       " chargebacks where arn = %s", (arn,)).fetchone()
    if row is None or row[1] is None:
        raise LedgerError("no matched chargeback with that ARN")
    network, pid, amount, ccy, state = row
    if state == "represented":
        return "represented"
    t = Transfer(ids("representment", network, arn),
                 accounts("network_receivable", network, ccy),
                 accounts("merchant_payable", "", ccy), amount, ccy, REPRESENTMENT)
    ev = Event(ids("ev", "represented", network, arn), "represented",
               {"arn": arn, "network": network, "amount_minor": amount,
                "evidence": evidence[:200]}, payment_id=pid.int, transfer_id=t.id)
    [out] = led.submit([Request((t,), (ev,), ())])
    if not out.ok:
        raise LedgerError(f"representment {arn}: {out.results[0]}")
    conn.execute("update chargebacks set state = 'represented' where arn = %s", (arn,))
    return "represented"


def listed(conn: psycopg.Connection) -> list[dict[str, Any]]:
    migrate(conn)
    rows = conn.execute("select arn, network, payment_id, amount_minor, ledger, reason_code,"
                        " state from chargebacks order by arn").fetchall()
    return [{"arn": r[0], "network": r[1], "payment_id": str(r[2]) if r[2] else None,
             "amount_minor": r[3], "currency": f"{r[4]:03d}", "reason_code": r[5],
             "state": r[6]} for r in rows]
