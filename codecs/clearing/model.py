"""What a clearing file carries, whatever the network: presentments and a file header.

One ``Presentment`` is one first presentment of an acquirer: a sale (Visa TC05,
Mastercard 1240 with DE3 00), a credit voucher / refund (TC06, DE3 20) or a cash
disbursement (TC07, DE3 12). Both formats write and read back exactly these fields,
so ``read(write(f)) == f`` holds for each. The optional fields go into the optional
records: Visa TCR1 (terminal and card acceptor id) and TCR5 (transaction id,
authorized amount, product), Mastercard DE41/DE42, DE63, DE30 and PDS 0002.

``check_presentment`` is what a writer refuses; its errors name the record and the
field, never a value. ``repr`` masks the PAN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import date
from functools import cache
from typing import Any, Literal

import pycountry

from payswitch.codecs.clearing.arn import arn_ok
from payswitch.codecs.clearing.errors import ClearingError
from payswitch.codecs.pan import mask_pan

Kind = Literal["sale", "credit", "cash"]
KINDS: tuple[Kind, ...] = ("sale", "credit", "cash")
MAX_AMOUNT_MINOR = 10**12 - 1  # 12 digits in both formats

# Text both formats carry unchanged: ASCII and EBCDIC cp500 alike; no backslash
# (the DE43 separator); trimmed, because fixed-width fields are space-padded.
_TEXT = re.compile(r"[A-Za-z0-9 .,&'/-]*")


@dataclass(frozen=True, repr=False)
class Presentment:
    kind: Kind
    pan: str  # 13-19 digits
    amount_minor: int  # final amount, minor units of currency
    currency: str  # ISO 4217 numeric, 3 digits
    txn_date: date  # local date of the transaction
    arn: str  # 23 digits, Luhn check digit last
    auth_code: str  # approval code, 6 characters A-Z 0-9 (blank-free)
    mcc: str  # 4 digits
    merchant_name: str  # at most 22 characters (Mastercard DE43 subfield 1)
    merchant_city: str  # at most 13 characters
    merchant_country: str  # ISO 3166 alpha-3
    terminal_id: str = ""  # card acceptor terminal id, at most 8
    merchant_id: str = ""  # card acceptor id code, at most 15
    transaction_id: str = ""  # network transaction / lifecycle id, 15 digits
    auth_amount_minor: int | None = None  # authorized amount when it differs
    product_id: str = ""  # network card product (e.g. MCC, MDS; Visa A, F), at most 3

    def __repr__(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "pan"]
        return f"Presentment(pan={mask_pan(self.pan)!r}, {', '.join(parts)})"


@dataclass(frozen=True)
class ClearingFile:
    """One outgoing file: who sends it, for which processing date, and its records."""

    sender_id: str  # acquirer BIN / processor id, 6 digits
    file_date: date  # processing (cut-off) date
    file_seq: int  # 1-999, the file's number on that date
    presentments: tuple[Presentment, ...] = field(default_factory=tuple)
    test: bool = False  # a test file: Visa TC90 test option, Mastercard PDS 0122 "T"


def _text(value: object, max_len: int, name: str, record: int | None,
          required: bool = True) -> None:
    if not isinstance(value, str) or len(value) > max_len or not _TEXT.fullmatch(value):
        raise ClearingError(f"{name} is not text of at most {max_len} characters",
                            record=record, field=name)
    if value != value.strip() or (required and not value):
        raise ClearingError(f"{name} is empty or has leading/trailing blanks",
                            record=record, field=name)


def _digits(value: object, sizes: range | tuple[int, ...], name: str,
            record: int | None) -> None:
    if not (isinstance(value, str) and value.isascii() and value.isdigit()
            and len(value) in sizes):
        want = f"{min(sizes)}-{max(sizes)}" if len(sizes) > 1 else f"{sizes[0]}"
        raise ClearingError(f"{name} is not {want} digits", record=record, field=name)


def _amount(value: object, name: str, record: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or \
            not 0 <= value <= MAX_AMOUNT_MINOR:
        raise ClearingError(f"{name} is not an int of 0..{MAX_AMOUNT_MINOR}",
                            record=record, field=name)


def check_presentment(p: Presentment, record: int | None = None) -> None:
    """Refuse what a writer could not write or its reader would not give back."""
    if p.kind not in KINDS:
        raise ClearingError("kind is not sale, credit or cash", record=record, field="kind")
    _digits(p.pan, range(13, 20), "pan", record)
    _amount(p.amount_minor, "amount_minor", record)
    _digits(p.currency, (3,), "currency", record)
    if not isinstance(p.txn_date, date):
        raise ClearingError("txn_date is not a date", record=record, field="txn_date")
    if not arn_ok(p.arn):
        raise ClearingError("ARN is not 23 digits with its check digit", record=record,
                            field="arn")
    if not (isinstance(p.auth_code, str) and re.fullmatch(r"[A-Z0-9]{6}", p.auth_code)):
        raise ClearingError("auth_code is not 6 characters A-Z 0-9", record=record,
                            field="auth_code")
    _digits(p.mcc, (4,), "mcc", record)
    _text(p.merchant_name, 22, "merchant_name", record)
    _text(p.merchant_city, 13, "merchant_city", record)
    if not (isinstance(p.merchant_country, str) and _country(alpha_3=p.merchant_country)):
        raise ClearingError("merchant_country is not ISO 3166 alpha-3", record=record,
                            field="merchant_country")
    _text(p.terminal_id, 8, "terminal_id", record, required=False)
    _text(p.merchant_id, 15, "merchant_id", record, required=False)
    if p.transaction_id:
        _digits(p.transaction_id, (15,), "transaction_id", record)
    if p.auth_amount_minor is not None:
        _amount(p.auth_amount_minor, "auth_amount_minor", record)
    if not (isinstance(p.product_id, str) and re.fullmatch(r"[A-Z0-9]{0,3}", p.product_id)):
        raise ClearingError("product_id is not up to 3 characters A-Z 0-9", record=record,
                            field="product_id")


@cache
def _country(**code: str) -> Any:
    # pycountry types get() as taking a Country; it takes the field to look up by
    return pycountry.countries.get(**code)  # type: ignore[arg-type]


def alpha2(alpha_3: str) -> str:
    """ISO 3166 alpha-3 -> alpha-2 (Visa's merchant country); checked before."""
    return _country(alpha_3=alpha_3).alpha_2


def alpha3(alpha_2: str, record: int | None = None) -> str:
    c = _country(alpha_2=alpha_2) if re.fullmatch(r"[A-Z]{2}", alpha_2) else None
    if c is None:
        raise ClearingError("merchant country is not ISO 3166 alpha-2", record=record,
                            field="merchant_country")
    return c.alpha_3


def check_file(f: ClearingFile) -> None:
    _digits(f.sender_id, (6,), "sender_id", None)
    if not isinstance(f.file_date, date):
        raise ClearingError("file_date is not a date", field="file_date")
    if not (isinstance(f.file_seq, int) and 1 <= f.file_seq <= 999):
        raise ClearingError("file_seq is not 1..999", field="file_seq")
