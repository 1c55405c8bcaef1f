"""Merchant payouts after settlement: each merchant is paid its net for the date, by
ACH credit (NACHA CCD) or ISO 20022 credit transfer (pain.001 to our bank, and the
pacs.008 the bank sends on), as its ``Merchant`` config says.

net = sales - refunds - fees - chargebacks, per merchant and currency, from the
network-accepted items of the date (``Item``: the caller joins what it sent, which
names the merchant, with the networks' reports, which give the settled amount and
interchange) and the chargebacks recorded against them. A merchant whose net is not
positive is not paid (its balance stays in the merchant payable).

Ledger: the payout moves merchant payable -> payout clearing. For ACH that is
``ledger.ach.originate`` (its transfer ids from the NACHA file's identity and the
entry's trace number); for ISO 20022 one transfer per merchant (id from merchant,
currency, date). A return (the ACH operator's returns file, addenda 99, matched by
the original trace number) moves it back: payout clearing -> merchant payable, and
the ``payouts`` row becomes ``returned`` with the reason code. Once per (merchant,
currency, date): the ``payouts`` primary key and the derived ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from payswitch.codecs import iso20022, nacha

from . import ach
from .chargebacks import migrate
from .settlement import PAYOUT, PAYOUT_RETURN, Accounts, Ids
from .store import Ledger, Request
from .types import Event, LedgerError, Transfer

ODFI = "02100002"  # our bank's routing (first 8 digits): ODFI of the payout files
OPERATOR = "021000021"  # the ACH operator the file goes to
COMPANY_ID = "1234567890"
ACH_CREDIT_CHECKING = 22


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    name: str
    rail: str  # "ach" | "iso20022"
    routing: str = ""  # ACH: 9-digit RDFI routing number
    account: str = ""  # ACH: account number; ISO 20022: IBAN
    agent_bic: str = ""  # ISO 20022: the creditor's bank (BIC)


@dataclass(frozen=True)
class Item:
    merchant_id: str
    arn: str
    kind: str  # sale | cash | credit
    amount_minor: int  # as the network settled it
    currency: int
    fee_minor: int  # what the merchant pays for it (interchange + scheme + markup)


@dataclass
class Net:
    sales: int = 0
    refunds: int = 0
    fees: int = 0
    chargebacks: int = 0

    @property
    def net(self) -> int:
        return self.sales - self.refunds - self.fees - self.chargebacks


def nets(items: Sequence[Item], chargebacks: Mapping[str, int]) -> dict[tuple[str, int], Net]:
    """(merchant, currency) -> its figures; ``chargebacks``: ARN -> amount charged back."""
    out: dict[tuple[str, int], Net] = defaultdict(Net)
    for i in items:
        n = out[(i.merchant_id, i.currency)]
        if i.kind == "credit":
            n.refunds += i.amount_minor
            n.fees -= i.fee_minor  # a refund gives the fee back (the item's fee is signed)
        else:
            n.sales += i.amount_minor
            n.fees += i.fee_minor
        n.chargebacks += chargebacks.get(i.arn, 0)
    return dict(out)


def _ref(merchant: str, ccy: int, day: dt.date) -> str:
    h = hashlib.sha256(f"payout|{merchant}|{ccy}|{day}".encode()).hexdigest()
    return "PO" + h[:20].upper()


def pay_day(conn: psycopg.Connection, led: Ledger, day: dt.date, items: Sequence[Item],
            merchants: Mapping[str, Merchant], *, accounts: Accounts, ids: Ids,
            schemas: Any = None, validate: bool = False) -> dict[str, Any]:
    """Pays every merchant with a positive net; returns the report and the files' text:
    ``ach`` (NACHA, or None), ``pain001`` / ``pacs008`` (XML bytes, or None)."""
    migrate(conn)
    cbs: dict[str, int] = dict(conn.execute(
        "select arn, amount_minor from chargebacks where state = 'open'").fetchall())
    figures = nets(items, cbs)
    ach_entries: list[tuple[Merchant, int, int]] = []
    iso: list[tuple[Merchant, int, int]] = []
    report: dict[str, Any] = {"date": day.isoformat(), "merchants": {}}
    for (mid, ccy), n in sorted(figures.items()):
        m = merchants.get(mid)
        row = {"currency": f"{ccy:03d}", "sales": n.sales, "refunds": n.refunds,
               "fees": n.fees, "chargebacks": n.chargebacks, "net": n.net,
               "rail": m.rail if m else None}
        report["merchants"][mid] = row
        if m is None or n.net <= 0:
            row["paid"] = 0
            continue
        row["paid"] = n.net
        (ach_entries if m.rail == "ach" else iso).append((m, ccy, n.net))
    report["ach"] = _pay_ach(conn, led, day, ach_entries, accounts) if ach_entries else None
    report["pain001"], report["pacs008"] = (
        _pay_iso(conn, led, day, iso, accounts, ids, schemas, validate) if iso else (None, None))
    return report


def ach_file(day: dt.date, entries: Sequence[tuple[Merchant, int, int]]) -> nacha.NachaFile:
    es = tuple(nacha.Entry(ACH_CREDIT_CHECKING, m.routing, m.account, amount,
                           m.merchant_id[:15], m.name[:22], f"{ODFI}{k:07d}")
               for k, (m, _ccy, amount) in enumerate(entries, start=1))
    batch = nacha.Batch(220, "PAYSWITCH", COMPANY_ID, "CCD", "PAYOUT",
                        day + dt.timedelta(days=1), ODFI, 1, es)
    return nacha.NachaFile(OPERATOR, COMPANY_ID, day, batches=(batch,),
                           creation_time="2300", destination_name="ACH OPERATOR",
                           origin_name="PAYSWITCH")


def _pay_ach(conn: psycopg.Connection, led: Ledger, day: dt.date,
             entries: Sequence[tuple[Merchant, int, int]], accounts: Accounts) -> str:
    if any(ccy != 840 for _m, ccy, _a in entries):
        raise LedgerError("ACH pays USD only")
    f = ach_file(day, entries)
    accts = _ach_accounts(led, accounts)
    text = ach.originate(led, f, lambda e: accounts("merchant_payable", "", 840), accts)
    for (m, ccy, amount), e in zip(entries, f.entries(), strict=True):
        conn.execute("insert into payouts (merchant_id, ledger, settle_date, amount_minor,"
                     " rail, reference, state) values (%s, %s, %s, %s, 'ach', %s, 'sent')"
                     " on conflict do nothing", (m.merchant_id, ccy, day, amount,
                                                 e.trace_number))
    return text


def _ach_accounts(led: Ledger, accounts: Accounts) -> ach.AchAccounts:
    from .settlement import ensure_accounts
    ensure_accounts(led, accounts, "", 840)
    return ach.AchAccounts(clearing_id=accounts("payout_clearing", "", 840),
                           settlement_id=accounts("settlement_bank", "", 840), ledger=840,
                           originate_code=PAYOUT, settle_code=PAYOUT)


def _pay_iso(conn: psycopg.Connection, led: Ledger, day: dt.date,
             entries: Sequence[tuple[Merchant, int, int]], accounts: Accounts, ids: Ids,
             schemas: Any, validate: bool) -> tuple[bytes, bytes]:
    from .money import currency
    from .settlement import ensure_accounts
    now = dt.datetime.combine(day, dt.time(23, 0), tzinfo=dt.UTC)
    transfers, creds = [], []
    for m, ccy, amount in entries:
        ensure_accounts(led, accounts, "", ccy)
        ref = _ref(m.merchant_id, ccy, day)
        t = Transfer(ids("payout", m.merchant_id, ccy, day.isoformat()),
                     accounts("merchant_payable", "", ccy), accounts("payout_clearing", "", ccy),
                     amount, ccy, PAYOUT)
        ev = Event(ids("ev", "payout", m.merchant_id, ccy, day.isoformat()), "payout",
                   {"merchant_id": m.merchant_id, "amount_minor": amount, "rail": "iso20022",
                    "reference": ref, "currency": f"{ccy:03d}"}, transfer_id=t.id)
        [out] = led.submit([Request((t,), (ev,), ())])
        if not out.ok:
            raise LedgerError(f"payout {m.merchant_id}: {out.results[0]}")
        conn.execute("insert into payouts (merchant_id, ledger, settle_date, amount_minor,"
                     " rail, reference, state) values (%s, %s, %s, %s, 'iso20022', %s, 'sent')"
                     " on conflict do nothing", (m.merchant_id, ccy, day, amount, ref))
        transfers.append(iso20022.Transfer(ref, amount, currency(ccy).alpha, m.agent_bic,
                                           m.name, iso20022.Account(m.account)))
        creds.append(iso20022.CreditTransfer(
            ref, ref, amount, currency(ccy).alpha, "PAYSWITCH ACQUIRING",
            iso20022.Account(OUR_IBAN), OUR_BIC, m.agent_bic, m.name,
            iso20022.Account(m.account), remittance=f"payout {day}"))
    msg = f"PAIN{day:%Y%m%d}"
    pain = iso20022.Pain001(msg, now, "PAYSWITCH ACQUIRING", (iso20022.PaymentInfo(
        msg, day + dt.timedelta(days=1), "PAYSWITCH ACQUIRING", iso20022.Account(OUR_IBAN),
        OUR_BIC, tuple(transfers)),))
    pacs = iso20022.Pacs008(f"PACS{day:%Y%m%d}", now, day + dt.timedelta(days=1), OUR_BIC,
                            creds[0].creditor_agent, tuple(creds))
    return (iso20022.build(pain, schemas, validate=validate),
            iso20022.build(pacs, schemas, validate=validate))


OUR_IBAN = "DE89370400440532013000"  # the acquirer's account at its bank (test IBAN)
OUR_BIC = "COBADEFFXXX"


def apply_returns(conn: psycopg.Connection, led: Ledger, returns: nacha.NachaFile, *,
                  accounts: Accounts, ids: Ids) -> list[dict[str, Any]]:
    """Each returned entry (addenda 99) of our payouts: payout clearing -> merchant
    payable again, the payout row ``returned``."""
    migrate(conn)
    done = []
    for e in returns.entries():
        for a in e.addenda:
            if not isinstance(a, nacha.ReturnAddenda):
                continue
            row = conn.execute("select merchant_id, ledger, amount_minor, state from payouts"
                               " where reference = %s", (a.original_trace,)).fetchone()
            if row is None:
                continue
            mid, ccy, amount, state = row
            t = Transfer(ids("payout_return", a.original_trace),
                         accounts("payout_clearing", "", ccy),
                         accounts("merchant_payable", "", ccy), amount, ccy, PAYOUT_RETURN)
            ev = Event(ids("ev", "payout_returned", a.original_trace), "payout_returned",
                       {"merchant_id": mid, "amount_minor": amount,
                        "reason_code": a.reason_code,
                        # ODFI-sequence: a 15-digit run could pass the PAN guard's Luhn
                        "trace": f"{a.original_trace[:8]}-{a.original_trace[8:]}"},
                       transfer_id=t.id)
            [out] = led.submit([Request((t,), (ev,), ())])
            if not out.ok:
                raise LedgerError(f"payout return {a.original_trace}: {out.results[0]}")
            conn.execute("update payouts set state = 'returned', return_code = %s"
                         " where reference = %s", (a.reason_code, a.original_trace))
            done.append({"merchant_id": mid, "amount_minor": amount,
                         "reason_code": a.reason_code, "was": state})
    return done
