"""Money: ISO 4217 exponents, HALF_EVEN conversion, DE10-style rates, FX legs.

A ledger is one currency; its number is the ISO 4217 numeric code (840 USD, 978 EUR, ...).
A cross-currency payment is two transfers, one per ledger, linked so that both or neither
happen, through the FX position accounts of each ledger: every ledger still balances, and
the FX position accounts show the open position per currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext

from .types import LedgerError, Transfer, TransferFlags


@dataclass(frozen=True, slots=True)
class Currency:
    alpha: str
    numeric: int
    exponent: int


# A small ISO 4217 table: the currencies the switch meets, and the odd exponents (0 and 3).
_TABLE = [
    ("USD", 840, 2), ("EUR", 978, 2), ("GBP", 826, 2), ("CHF", 756, 2), ("CAD", 124, 2),
    ("AUD", 36, 2), ("NZD", 554, 2), ("SEK", 752, 2), ("NOK", 578, 2), ("DKK", 208, 2),
    ("PLN", 985, 2), ("CZK", 203, 2), ("HUF", 348, 2), ("CNY", 156, 2), ("HKD", 344, 2),
    ("SGD", 702, 2), ("INR", 356, 2), ("MXN", 484, 2), ("BRL", 986, 2), ("ZAR", 710, 2),
    ("TRY", 949, 2), ("AED", 784, 2), ("SAR", 682, 2), ("ILS", 376, 2), ("THB", 764, 2),
    ("JPY", 392, 0), ("KRW", 410, 0), ("ISK", 352, 0), ("CLP", 152, 0), ("VND", 704, 0),
    ("XOF", 952, 0), ("XAF", 950, 0), ("UGX", 800, 0),
    ("BHD", 48, 3), ("KWD", 414, 3), ("OMR", 512, 3), ("JOD", 400, 3), ("TND", 788, 3),
    ("LYD", 434, 3), ("IQD", 368, 3),
]
BY_ALPHA = {a: Currency(a, n, e) for a, n, e in _TABLE}
BY_NUMERIC = {n: Currency(a, n, e) for a, n, e in _TABLE}
RATE_DIGITS_MAX = 28  # significant digits a rate may carry


def currency(code: str | int) -> Currency:
    """By alpha ('USD') or numeric (840 or '840') code."""
    if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
        c = BY_NUMERIC.get(int(code))
    else:
        c = BY_ALPHA.get(code.upper())
    if c is None:
        raise LedgerError(f"unknown currency {code!r}")
    return c


def exponent(code: str | int) -> int:
    return currency(code).exponent


def convert(amount_minor: int, from_ccy: str | int, to_ccy: str | int, rate: Decimal) -> int:
    """amount (minor units of from_ccy) x rate (to per from, in major units), rounded
    HALF_EVEN to the minor unit of to_ccy. Exact: Decimal with enough precision."""
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool):
        raise LedgerError("amount_minor must be an int")
    if not isinstance(rate, Decimal) or not rate.is_finite() or rate <= 0:
        raise LedgerError("rate must be a positive finite Decimal")
    if len(rate.as_tuple().digits) > RATE_DIGITS_MAX:
        raise LedgerError("rate has too many digits")
    ef, et = exponent(from_ccy), exponent(to_ccy)
    with localcontext() as ctx:
        ctx.prec = 80  # 19-digit amount x 28-digit rate fits exactly
        ctx.traps[InvalidOperation] = True
        major = Decimal(amount_minor).scaleb(-ef) * rate
        out = major.quantize(Decimal(1).scaleb(-et), rounding=ROUND_HALF_EVEN)
        return int(out.scaleb(et))


def rate_from_de10(de10: str) -> Decimal:
    """ISO 8583 DE10/DE9 'conversion rate': first digit = decimal places, then 7 digits."""
    if len(de10) != 8 or not de10.isdigit():
        raise LedgerError("DE10 conversion rate must be 8 digits")
    places = int(de10[0])
    rate = Decimal(int(de10[1:])).scaleb(-places)
    if rate <= 0:
        raise LedgerError("DE10 conversion rate must be positive")
    return rate


def fx_legs(*, first_id: int, second_id: int, payer_account_id: int,
            payer_fx_position_id: int, payee_fx_position_id: int, payee_account_id: int,
            payer_amount_minor: int, payer_ledger: int, payee_amount_minor: int,
            payee_ledger: int, code: int, pending: bool = True,
            timeout_s: int = 0) -> tuple[Transfer, Transfer]:
    """Two linked transfers for a cross-currency payment (e.g. cardholder billed in EUR,
    merchant paid in USD): payer -> FX position (payer's ledger) and FX position -> payee
    (payee's ledger). Post or void them together with a linked pair of post/void transfers."""
    flags = TransferFlags.PENDING if pending else TransferFlags.NONE
    t = timeout_s if pending else 0
    return (
        Transfer(first_id, payer_account_id, payer_fx_position_id, payer_amount_minor,
                 payer_ledger, code, flags | TransferFlags.LINKED, 0, t),
        Transfer(second_id, payee_fx_position_id, payee_account_id, payee_amount_minor,
                 payee_ledger, code, flags, 0, t),
    )
