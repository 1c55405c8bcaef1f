"""ISO 9564-1 PIN block layouts: encode and decode the clear block (pure functions).

Formats 0, 1 and 3 are 8-byte blocks for TDES keys; format 4 is the 16-byte AES
layout (a PIN field and a PAN field, enciphered as E(E(pin_field) xor pan_field) by
the caller). Random fill is passed in by the caller (this module has no I/O), and
nothing here ever puts a PIN or PAN into an exception message.
"""

from __future__ import annotations

FORMATS = (0, 1, 3, 4)


class PinBlockFormatError(ValueError):
    """A PIN, PAN or clear block that does not fit the format (no values in the text)."""


def _check_pin(pin: str) -> None:
    if not (4 <= len(pin) <= 12) or not pin.isdigit() or not pin.isascii():
        raise PinBlockFormatError("PIN must be 4 to 12 decimal digits")


def _check_pan(pan: str, minimum: int = 13) -> None:
    # Formats 0 and 3 take 12 digits left of the check digit: 13 digits at least.
    if not (minimum <= len(pan) <= 19) or not pan.isdigit() or not pan.isascii():
        raise PinBlockFormatError(f"PAN must be {minimum} to 19 decimal digits")


def pan_field(pan: str) -> bytes:
    """ISO formats 0 and 3: 0000 + the 12 rightmost PAN digits excluding the check digit."""
    _check_pan(pan)
    return bytes.fromhex("0000" + pan[-13:-1])


def _fill_nibbles(fill: bytes, count: int, alphabet: str) -> str:
    if len(fill) < count:
        raise PinBlockFormatError("not enough random fill")
    return "".join(alphabet[b % len(alphabet)] for b in fill[:count])


def encode_pin_field(pin: str, fmt: int, fill: bytes = b"") -> bytes:
    """The 8-byte PIN field of format 0, 1 or 3 (before the PAN xor)."""
    _check_pin(pin)
    pad = 14 - len(pin)
    if fmt == 0:
        s = "0" + format(len(pin), "X") + pin + "F" * pad
    elif fmt == 1:
        s = "1" + format(len(pin), "X") + pin + _fill_nibbles(fill, pad, "0123456789ABCDEF")
    elif fmt == 3:
        s = "3" + format(len(pin), "X") + pin + _fill_nibbles(fill, pad, "ABCDEF")
    else:
        raise PinBlockFormatError("8-byte PIN field formats are 0, 1 and 3")
    return bytes.fromhex(s)


def encode(pin: str, pan: str | None, fmt: int, fill: bytes = b"") -> bytes:
    """The clear PIN block of format 0, 1 or 3 (8 bytes).

    ``fill``: random bytes for formats 1 and 3 (at least 10; one nibble per byte).
    ``pan`` is required for formats 0 and 3 and ignored for format 1.
    """
    field = encode_pin_field(pin, fmt, fill)
    if fmt == 1:
        return field
    if pan is None:
        raise PinBlockFormatError("this format needs the PAN")
    return bytes(a ^ b for a, b in zip(field, pan_field(pan), strict=True))


def decode(block: bytes, pan: str | None, fmt: int) -> str:
    """The PIN from a clear block of format 0, 1 or 3; checks the layout strictly."""
    if len(block) != 8:
        raise PinBlockFormatError("a format 0/1/3 PIN block is 8 bytes")
    if fmt in (0, 3):
        if pan is None:
            raise PinBlockFormatError("this format needs the PAN")
        block = bytes(a ^ b for a, b in zip(block, pan_field(pan), strict=True))
    elif fmt != 1:
        raise PinBlockFormatError("8-byte PIN block formats are 0, 1 and 3")
    s = block.hex().upper()
    if int(s[0], 16) != fmt:
        raise PinBlockFormatError("PIN block control field does not match the format")
    n = int(s[1], 16)
    if not 4 <= n <= 12:
        raise PinBlockFormatError("PIN length out of range")
    pin, rest = s[2 : 2 + n], s[2 + n :]
    if not pin.isdigit():
        raise PinBlockFormatError("PIN field holds non-digits")
    if fmt == 0 and rest != "F" * len(rest):
        raise PinBlockFormatError("format 0 fill is not F")
    if fmt == 3 and any(c not in "ABCDEF" for c in rest):
        raise PinBlockFormatError("format 3 fill is not A-F")
    return pin


# --- format 4 (AES, 16-byte blocks) -------------------------------------------------


def encode_pin_field_4(pin: str, fill: bytes) -> bytes:
    """Format 4 PIN field: 4 L PIN, A fill to 16 nibbles, then 8 random bytes."""
    _check_pin(pin)
    if len(fill) < 8:
        raise PinBlockFormatError("format 4 needs 8 random bytes")
    s = "4" + format(len(pin), "X") + pin + "A" * (14 - len(pin))
    return bytes.fromhex(s) + bytes(fill[:8])


def encode_pan_field_4(pan: str) -> bytes:
    """Format 4 PAN field: M (PAN length - 12, 0 for 12 digits or fewer), the PAN (right
    justified in 12 digits, zero filled on the left, when shorter: ISO 9564-1:2017), zero
    padded to 32 nibbles."""
    _check_pan(pan, 1)
    s = str(max(0, len(pan) - 12)) + pan.rjust(12, "0")
    return bytes.fromhex(s + "0" * (32 - len(s)))


def decode_pin_field_4(field: bytes) -> str:
    if len(field) != 16:
        raise PinBlockFormatError("a format 4 PIN field is 16 bytes")
    s = field[:8].hex().upper()
    if s[0] != "4":
        raise PinBlockFormatError("PIN block control field does not match the format")
    n = int(s[1], 16)
    if not 4 <= n <= 12:
        raise PinBlockFormatError("PIN length out of range")
    pin, rest = s[2 : 2 + n], s[2 + n :]
    if not pin.isdigit() or rest != "A" * len(rest):
        raise PinBlockFormatError("format 4 PIN field is malformed")
    return pin


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))
