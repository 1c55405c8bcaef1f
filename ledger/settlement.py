"""Network settlement in the ledger: each network's net settlement per currency and day
as balanced transfers, from the network's settlement report.

The report is the JSON the network simulator returns (``SettlementReport.to_dict()``;
the ledger does not import the simulator): ``accepted`` items (``arn``, ``kind``,
``amount_minor``, ``currency`` ISO 4217 numeric, ``interchange_minor``), ``net_minor``
and ``interchange_minor`` per currency, optionally ``scheme_fee_minor`` per currency
(what the network also keeps; 0 when absent).

For (network, date, currency), with G the signed gross of the accepted items (credits
negative), I the interchange, S the scheme fees and N = G - I - S what the network pays
(negative: takes), four transfers, each one debit and one credit of the same amount:

| leg | debit | credit | amount |
|---|---|---|---|
| cash | settlement bank | network receivable | N |
| interchange | interchange expense | network receivable | I |
| scheme fees | scheme fee expense | network receivable | S |
| merchant fees | merchant payable | acquirer fee income | M = I + S + markup |

A negative amount swaps the two sides; a zero leg is left out. After a day whose every
presentment was posted at its presented amount and accepted, the network receivable
of that day is back to zero (G was its debit at clearing). The markup is
``markup_bp`` of each accepted item's amount (HALF_EVEN), the acquirer's margin over
interchange-plus pricing; ``merchant_fee`` gives the same figure per item, which the
payouts use.

Idempotent per (network, date): transfer and event ids derive from (network, date,
currency, leg) through the caller's id scheme, the legs of a currency form one linked
chain, so a re-run answers ``exists`` and posts nothing. Account ids come from the
caller too (``Accounts``): the switch's network receivable and merchant payable are
the very accounts its holds use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import Any

from .store import Ledger, Request
from .types import Account, CreateTransferResult, Event, LedgerError, Transfer, TransferFlags

# transfer codes of the settlement and after (the switch's authorization codes are 1-4)
SETTLEMENT, INTERCHANGE, SCHEME_FEE, MERCHANT_FEE = 20, 21, 22, 23
CHARGEBACK, REPRESENTMENT, PAYOUT, PAYOUT_RETURN = 24, 25, 26, 27
# account codes (the switch's are 1-6)
SETTLEMENT_BANK, INTERCHANGE_EXPENSE, SCHEME_FEE_EXPENSE, FEE_INCOME = 10, 11, 12, 13
PAYOUT_CLEARING, CHARGEBACK_RECEIVABLE = 14, 15

ROLE_CODES = {"settlement_bank": SETTLEMENT_BANK, "interchange_expense": INTERCHANGE_EXPENSE,
              "scheme_fee_expense": SCHEME_FEE_EXPENSE, "fee_income": FEE_INCOME,
              "payout_clearing": PAYOUT_CLEARING,
              "chargeback_receivable": CHARGEBACK_RECEIVABLE}

# (role, network or "", ISO 4217 numeric) -> account id: the caller's scheme. Roles:
# network_receivable, merchant_payable (the switch's), and the ROLE_CODES ones.
Accounts = Callable[[str, str, int], int]
Ids = Callable[..., int]  # parts -> a deterministic 128-bit id (the switch's det_id)


@dataclass(frozen=True)
class Item:
    arn: str
    kind: str
    amount_minor: int
    currency: int
    interchange_minor: int

    @property
    def sign(self) -> int:
        return -1 if self.kind == "credit" else 1


def items(report: Mapping[str, Any]) -> list[Item]:
    return [Item(str(a["arn"]), str(a["kind"]), int(a["amount_minor"]), int(a["currency"]),
                 int(a["interchange_minor"])) for a in report.get("accepted", ())]


def markup(amount_minor: int, markup_bp: int) -> int:
    return round(Fraction(amount_minor * markup_bp, 10_000))


def merchant_fee(item: Item, markup_bp: int, scheme_fee_minor: int = 0) -> int:
    """What the merchant pays for one accepted item (signed like the item)."""
    return item.sign * (item.interchange_minor + markup(item.amount_minor, markup_bp)
                        + scheme_fee_minor)


@dataclass(frozen=True)
class Leg:
    name: str
    debit_role: str
    credit_role: str
    amount_minor: int  # signed: negative swaps the sides


def legs(report: Mapping[str, Any], currency: int, markup_bp: int) -> list[Leg]:
    ccy = f"{currency:03d}"
    its = [i for i in items(report) if i.currency == currency]
    net = int(report.get("net_minor", {}).get(ccy, 0))
    ic = int(report.get("interchange_minor", {}).get(ccy, 0))
    scheme = int((report.get("scheme_fee_minor") or {}).get(ccy, 0))
    fees = sum(merchant_fee(i, markup_bp) for i in its) + scheme
    return [Leg("cash", "settlement_bank", "network_receivable", net),
            Leg("interchange", "interchange_expense", "network_receivable", ic),
            Leg("scheme_fees", "scheme_fee_expense", "network_receivable", scheme),
            Leg("merchant_fees", "merchant_payable", "fee_income", fees)]


def currencies(report: Mapping[str, Any]) -> list[int]:
    seen = {int(c) for c in report.get("net_minor", {})}
    seen |= {i.currency for i in items(report)}
    return sorted(seen)


def ensure_accounts(led: Ledger, accounts: Accounts, network: str, currency: int) -> None:
    new = [Account(accounts(role, network if role == "network_receivable" else "",
                            currency), currency, code) for role, code in ROLE_CODES.items()]
    bad = [r for r in led.create_accounts(new) if r not in ("created", "exists")]
    if bad:
        raise LedgerError(f"settlement accounts: {bad[0]}")


def settle(led: Ledger, report: Mapping[str, Any], *, network: str, day: date,
           accounts: Accounts, ids: Ids, markup_bp: int = 30) -> dict[str, Any]:
    """Posts the report's settlement; returns per currency the legs and the outcome
    (``created`` the first time, ``exists`` on a re-run)."""
    if report.get("file_error"):
        return {"network": network, "date": day.isoformat(), "currencies": {},
                "file_error": report["file_error"]}
    out: dict[str, Any] = {}
    for ccy in currencies(report):
        ensure_accounts(led, accounts, network, ccy)
        chain = _transfers(legs(report, ccy, markup_bp), network, day, ccy, accounts, ids)
        payload = {"network": network, "date": day.isoformat(), "currency": f"{ccy:03d}",
                   **{leg.name: leg.amount_minor for leg in legs(report, ccy, markup_bp)}}
        event = Event(ids("ev", "settled", network, day.isoformat(), ccy), "settled", payload,
                      transfer_id=chain[0].id if chain else None)
        [res] = led.submit([Request(tuple(chain), (event,), ())])
        first = res.results[0] if res.results else CreateTransferResult.EXISTS
        if not res.ok:
            raise LedgerError(f"settlement {network} {day} {ccy}: {first}")
        out[f"{ccy:03d}"] = {**payload, "result": str(first)}
    return {"network": network, "date": day.isoformat(), "currencies": out}


def _transfers(ls: Sequence[Leg], network: str, day: date, ccy: int, accounts: Accounts,
               ids: Ids) -> list[Transfer]:
    chain = []
    for leg in ls:
        if leg.amount_minor == 0:
            continue
        dr, cr = leg.debit_role, leg.credit_role
        if leg.amount_minor < 0:
            dr, cr = cr, dr
        code = {"cash": SETTLEMENT, "interchange": INTERCHANGE, "scheme_fees": SCHEME_FEE,
                "merchant_fees": MERCHANT_FEE}[leg.name]
        chain.append(Transfer(
            ids("settle", network, day.isoformat(), ccy, leg.name),
            accounts(dr, network if dr == "network_receivable" else "", ccy),
            accounts(cr, network if cr == "network_receivable" else "", ccy),
            abs(leg.amount_minor), ccy, code, TransferFlags.NONE))
    return [(t if i == len(chain) - 1 else _linked(t)) for i, t in enumerate(chain)]


def _linked(t: Transfer) -> Transfer:
    return Transfer(t.id, t.debit_account_id, t.credit_account_id, t.amount, t.ledger, t.code,
                    t.flags | TransferFlags.LINKED)


def totals_by_currency(its: Sequence[Item]) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for i in its:
        out[i.currency] += i.sign * i.amount_minor
    return dict(out)
