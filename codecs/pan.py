"""PAN handling that every package shares: masking and the Luhn check."""

from __future__ import annotations


def mask_pan(pan: str | None) -> str:
    """``411111******1111``: first six and last four, the rest starred."""
    if not pan:
        return ""
    if len(pan) < 13:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def luhn_ok(pan: str) -> bool:
    if not pan.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0
