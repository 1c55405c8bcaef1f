"""The 23-digit acquirer reference number (ARN), Visa TCR0 positions 27-49 and
Mastercard DE31.

Layout (both networks)::

    1 format code | 6 acquirer BIN | 4 processing date YDDD | 11 sequence | 1 check digit

The check digit is the mod-10 (Luhn) digit computed over the first 22 digits, the
same rule as a PAN's; the tests check it against cardutil's independent Luhn.
"""

from __future__ import annotations

from datetime import date

from payswitch.codecs.clearing.errors import ClearingError
from payswitch.codecs.pan import luhn_ok

ARN_LENGTH = 23


def luhn_digit(body: str) -> str:
    """The digit that makes ``body + digit`` pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # doubled: the rightmost digit of the body, then every other
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str(-total % 10)


def make_arn(bin6: str, processing_date: date, sequence: int, format_code: str = "2") -> str:
    if not (len(bin6) == 6 and bin6.isascii() and bin6.isdigit()):
        raise ClearingError("acquirer BIN is not 6 digits", field="arn")
    if not (format_code.isascii() and format_code.isdigit() and len(format_code) == 1):
        raise ClearingError("ARN format code is not one digit", field="arn")
    if not 0 <= sequence < 10**11:
        raise ClearingError("ARN sequence does not fit 11 digits", field="arn")
    ydddd = f"{processing_date.year % 10}{processing_date.timetuple().tm_yday:03d}"
    body = f"{format_code}{bin6}{ydddd}{sequence:011d}"
    return body + luhn_digit(body)


def arn_ok(arn: str) -> bool:
    return (isinstance(arn, str) and len(arn) == ARN_LENGTH and arn.isascii()
            and luhn_ok(arn))
