"""Amounts: int minor units in the model, decimal text in XML (ISO 4217 exponents)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Currencies whose exponent is not 2; everything else has 2 minor digits.
_EXPONENTS = {
    "BHD": 3, "BIF": 0, "CLF": 4, "CLP": 0, "DJF": 0, "GNF": 0, "IQD": 3, "ISK": 0,
    "JOD": 3, "JPY": 0, "KMF": 0, "KRW": 0, "KWD": 3, "LYD": 3, "OMR": 3, "PYG": 0,
    "RWF": 0, "TND": 3, "UGX": 0, "UYI": 0, "UYW": 4, "VND": 0, "VUV": 0, "XAF": 0,
    "XOF": 0, "XPF": 0,
}


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


def to_text(amount_minor: int, currency: str) -> str:
    if not isinstance(amount_minor, int) or amount_minor < 0:
        raise ValueError("amounts are non-negative int minor units")
    e = exponent(currency)
    if e == 0:
        return str(amount_minor)
    whole, frac = divmod(amount_minor, 10**e)
    return f"{whole}.{frac:0{e}d}"


def from_text(text: str, currency: str) -> int:
    """Minor units; ValueError when the text has more decimals than the currency."""
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError("not a decimal amount") from None
    minor = d.scaleb(exponent(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"more decimals than {currency} has")
    if minor < 0:
        raise ValueError("negative amount")
    return int(minor)
