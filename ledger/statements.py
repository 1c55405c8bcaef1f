"""camt.053 (end-of-day statement) and camt.054 (one notification per booking) from
the ledger's own rows.

A booking is a posted movement: a plain transfer or the post of a pending one (a
pending transfer books nothing until posted; a void never does). The statement of
an account for a UTC day: opening balance = credits - debits booked before the day,
the day's bookings as entries (in ledger order), closing = opening + credits -
debits of the day, which is the account's posted balance when nothing was booked
after the day (tested). Signs: positive = credit balance (what the bank owes the
customer).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import psycopg

from payswitch.codecs.iso20022 import model as m

_NOT_BOOKED = 2 | 8  # pending, void_pending_transfer


@dataclass(frozen=True)
class Booking:
    transfer_id: int
    amount_minor: int
    credit: bool  # credited to the account
    ts_ns: int


def _day_ns(day: dt.date) -> tuple[int, int]:
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    end = start + dt.timedelta(days=1)
    return int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9


def balance_before(conn: psycopg.Connection, account_id: int, ts_ns: int) -> int:
    row = conn.execute(
        "select coalesce(sum(case when credit_account_id = %(a)s then amount else -amount"
        " end), 0) from transfers where (debit_account_id = %(a)s or credit_account_id ="
        " %(a)s) and flags & %(nb)s = 0 and ts < %(ts)s",
        {"a": uuid.UUID(int=account_id), "nb": _NOT_BOOKED, "ts": ts_ns}).fetchone()
    return int(row[0]) if row else 0


def bookings(conn: psycopg.Connection, account_id: int, start_ns: int,
             end_ns: int) -> list[Booking]:
    a = uuid.UUID(int=account_id)
    rows = conn.execute(
        "select id, amount, credit_account_id = %(a)s, ts from transfers"
        " where (debit_account_id = %(a)s or credit_account_id = %(a)s)"
        " and flags & %(nb)s = 0 and ts >= %(s)s and ts < %(e)s order by ts, id",
        {"a": a, "nb": _NOT_BOOKED, "s": start_ns, "e": end_ns}).fetchall()
    return [Booking(r[0].int, int(r[1]), bool(r[2]), int(r[3])) for r in rows]


def _entry(b: Booking) -> m.Entry:
    day = dt.datetime.fromtimestamp(b.ts_ns / 1e9, dt.UTC).date()
    return m.Entry(f"{b.transfer_id:032x}"[:35], b.amount_minor, b.credit, day)


def statement(conn: psycopg.Connection, account_id: int, account: m.Account,
              currency: str, day: dt.date) -> m.Statement:
    start, end = _day_ns(day)
    opening = balance_before(conn, account_id, start)
    entries = bookings(conn, account_id, start, end)
    closing = opening + sum(b.amount_minor if b.credit else -b.amount_minor for b in entries)
    return m.Statement(f"STMT-{day:%Y%m%d}-{account_id:032x}"[:35], account, currency,
                       day - dt.timedelta(days=1), opening, day, closing,
                       tuple(_entry(b) for b in entries))


def camt053(conn: psycopg.Connection, accounts: list[tuple[int, m.Account, str]],
            day: dt.date, created: dt.datetime) -> m.Camt053:
    """One statement per (ledger account id, IBAN/other id, currency)."""
    stmts = tuple(statement(conn, a, acc, ccy, day) for a, acc, ccy in accounts)
    return m.Camt053(f"C053-{day:%Y%m%d}-{created:%H%M%S}", created, stmts)


def camt054(conn: psycopg.Connection, transfer_id: int, account_id: int,
            account: m.Account, currency: str, created: dt.datetime) -> m.Camt054 | None:
    """The notification of one booking on one account; None if it books nothing there."""
    row = conn.execute(
        "select amount, credit_account_id = %(a)s, ts from transfers where id = %(t)s"
        " and (debit_account_id = %(a)s or credit_account_id = %(a)s)"
        " and flags & %(nb)s = 0",
        {"a": uuid.UUID(int=account_id), "t": uuid.UUID(int=transfer_id),
         "nb": _NOT_BOOKED}).fetchone()
    if row is None:
        return None
    b = Booking(transfer_id, int(row[0]), bool(row[1]), int(row[2]))
    return m.Camt054(f"C054-{transfer_id:032x}"[:35], created, (m.Notification(
        f"NTFN-{transfer_id:032x}"[:35], account, currency, (_entry(b),)),))
