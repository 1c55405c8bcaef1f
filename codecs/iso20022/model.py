"""payswitch's model of the eight messages: the parts the switch and ledger use.

Amounts are int minor units with their currency; times are timezone-aware
datetimes; agents are BICs. Counts, control sums and totals are not in the
model: the builder computes them and the parser checks them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Account:
    id: str
    iban: bool = True  # False: a proprietary id (Othr/Id)


@dataclass(frozen=True)
class Reason:
    """A status, return or cancellation reason: an external code and free text."""

    code: str | None = None  # e.g. AC01, AM04, FF01, DUPL
    info: tuple[str, ...] = ()  # each at most 105 characters


# -- pain.001 customer credit transfer initiation --------------------------------

@dataclass(frozen=True)
class Transfer:
    end_to_end_id: str
    amount_minor: int
    currency: str
    creditor_agent: str
    creditor_name: str
    creditor_account: Account
    remittance: str | None = None


@dataclass(frozen=True)
class PaymentInfo:
    payment_id: str
    requested_date: dt.date
    debtor_name: str
    debtor_account: Account
    debtor_agent: str
    transfers: tuple[Transfer, ...]


@dataclass(frozen=True)
class Pain001:
    msg_id: str
    created: dt.datetime
    initiating_party: str
    payments: tuple[PaymentInfo, ...]


# -- pacs.008 FI-to-FI customer credit transfer -------------------------------------

@dataclass(frozen=True)
class CreditTransfer:
    end_to_end_id: str
    tx_id: str
    amount_minor: int
    currency: str
    debtor_name: str
    debtor_account: Account
    debtor_agent: str
    creditor_agent: str
    creditor_name: str
    creditor_account: Account
    remittance: str | None = None
    charge_bearer: str = "SLEV"


@dataclass(frozen=True)
class Pacs008:
    msg_id: str
    created: dt.datetime
    settlement_date: dt.date
    instructing_agent: str
    instructed_agent: str
    transactions: tuple[CreditTransfer, ...]
    settlement_method: str = "CLRG"


# -- pacs.002 payment status report ----------------------------------------------------

@dataclass(frozen=True)
class TxStatus:
    original_end_to_end_id: str
    status: str  # ACSC, ACCP, PDNG, RJCT, ...
    original_tx_id: str | None = None
    reason: Reason | None = None


@dataclass(frozen=True)
class Pacs002:
    msg_id: str
    created: dt.datetime
    original_msg_id: str
    original_msg_name: str  # e.g. pacs.008.001.08
    group_status: str | None = None
    group_reason: Reason | None = None
    transactions: tuple[TxStatus, ...] = ()
    instructing_agent: str | None = None
    instructed_agent: str | None = None


# -- pacs.004 payment return -----------------------------------------------------------

@dataclass(frozen=True)
class PaymentReturn:
    return_id: str
    original_msg_id: str
    original_msg_name: str
    original_end_to_end_id: str
    original_tx_id: str
    amount_minor: int
    currency: str
    reason: Reason


@dataclass(frozen=True)
class Pacs004:
    msg_id: str
    created: dt.datetime
    settlement_date: dt.date
    instructing_agent: str
    instructed_agent: str
    returns: tuple[PaymentReturn, ...]


# -- camt.056 FI-to-FI payment cancellation request (recall) ------------------------

@dataclass(frozen=True)
class Recall:
    cancellation_id: str
    original_msg_id: str
    original_msg_name: str
    original_end_to_end_id: str
    original_tx_id: str
    amount_minor: int
    currency: str
    settlement_date: dt.date
    reason: Reason


@dataclass(frozen=True)
class Camt056:
    assignment_id: str
    created: dt.datetime
    assigner: str
    assignee: str
    recalls: tuple[Recall, ...]


# -- pacs.028 FI-to-FI payment status request ------------------------------------------

@dataclass(frozen=True)
class StatusRequest:
    request_id: str
    original_msg_id: str
    original_msg_name: str
    original_end_to_end_id: str
    original_tx_id: str


@dataclass(frozen=True)
class Pacs028:
    msg_id: str
    created: dt.datetime
    instructing_agent: str
    instructed_agent: str
    requests: tuple[StatusRequest, ...]


# -- camt.053 statement and camt.054 debit/credit notification ------------------------

@dataclass(frozen=True)
class Entry:
    reference: str
    amount_minor: int  # positive; ``credit`` says which way
    credit: bool
    booking_date: dt.date
    end_to_end_id: str | None = None
    bank_tx_code: str = "TRF"  # proprietary bank transaction code


@dataclass(frozen=True)
class Statement:
    id: str
    account: Account
    currency: str
    opening_date: dt.date
    opening_balance_minor: int  # signed: negative is a debit balance
    closing_date: dt.date
    closing_balance_minor: int
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True)
class Camt053:
    msg_id: str
    created: dt.datetime
    statements: tuple[Statement, ...]


@dataclass(frozen=True)
class Notification:
    id: str
    account: Account
    currency: str
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Camt054:
    msg_id: str
    created: dt.datetime
    notifications: tuple[Notification, ...]


Message = Pain001 | Pacs008 | Pacs002 | Pacs004 | Camt056 | Pacs028 | Camt053 | Camt054

MESSAGE_TYPES: dict[type, str] = {
    Pain001: "pain.001", Pacs008: "pacs.008", Pacs002: "pacs.002", Pacs004: "pacs.004",
    Camt056: "camt.056", Pacs028: "pacs.028", Camt053: "camt.053", Camt054: "camt.054",
}
