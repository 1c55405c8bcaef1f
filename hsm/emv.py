"""The ARQC input and key path of each cryptogram version (pure functions).

The card and the issuer must MAC exactly the same bytes under the same key; these
profiles are the one place both the terminal generator (acting as the card) and the
issuer simulators take them from. Tags are hex strings ("9F02") mapped to their values
(``bytes``), as read from DE55 by the BER-TLV codec. Every profile uses the option A
ICC master key (UDK) derived from the issuer's MK-AC.

=====  ===============  =================================  =====  ==================
CVN    scheme           AC key                             pad    data after the tags
=====  ===============  =================================  =====  ==================
10     Visa VIS 1.4     the UDK itself, no session key     1      CVR (IAD 4-7)
18     Visa VIS 1.6     EMV common session key (ATC)       2      the whole IAD
16     M/Chip 4         Mastercard SKD (ATC, UN)           2      CVR (IAD 3-8)
17     M/Chip 4         Mastercard SKD (ATC, UN)           2      CVR + counters
=====  ===============  =================================  =====  ==================

ARPC: CVN 10, 16, 17 compute method 1 under the UDK (no session key); CVN 18 under
the session key, method 2 (CSU) or 1. Checked against pyemv's published vectors
(tests/hsm/test_hsm_cvn_vectors.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from payswitch.hsm.errors import HsmInputError

# EMV Book 2 minimum recommended data, in this order, then the ATC.
BASE_TAGS: tuple[tuple[str, int], ...] = (
    ("9F02", 6),  # amount, authorised
    ("9F03", 6),  # amount, other
    ("9F1A", 2),  # terminal country code
    ("95", 5),  # TVR
    ("5F2A", 2),  # transaction currency code
    ("9A", 3),  # transaction date
    ("9C", 1),  # transaction type
    ("9F37", 4),  # unpredictable number
    ("82", 2),  # AIP
    ("9F36", 2),  # ATC
)


@dataclass(frozen=True)
class Cvn:
    number: int
    padding: int  # ISO 9797-1 padding method for the ARQC MAC
    iad: tuple[slice, ...]  # the parts of the IAD (9F10) MACed after the tags
    session_key: str  # "none" (the UDK), "common" (EMV CSK, ATC), "mastercard" (ATC, UN)
    arpc_key: str  # "udk" or "session"
    min_iad: int  # the IAD must hold at least this many bytes
    udk_option: str = "A"  # EMV Book 2 A1.4: "A", or "B" (= A for PANs of <= 16 digits)


CVN10 = Cvn(10, 1, (slice(3, 7),), "none", "udk", 7)
CVN18 = Cvn(18, 2, (slice(None),), "common", "session", 7, "B")
CVN16 = Cvn(16, 2, (slice(2, 8),), "mastercard", "udk", 18)
CVN17 = Cvn(17, 2, (slice(2, 8), slice(10, 18)), "mastercard", "udk", 18)
CVNS = {10: CVN10, 18: CVN18, 16: CVN16, 17: CVN17}


def udk_input(pan: str, psn: str, option: str) -> bytes:
    """Y, the 8 bytes the MK-AC encrypts (with Y xor FF..) to give the card's UDK.
    Option A: rightmost 16 digits of PAN||PSN. Option B (PANs over 16 digits): SHA-1 of
    PAN||PSN (left-padded to even length), decimalised, first 16 digits. Public data."""
    digits = pan + psn
    if option == "B" and len(pan) > 16:
        if len(digits) % 2:
            digits = "0" + digits
        h = hashlib.sha1(bytes.fromhex(digits)).hexdigest().upper()  # noqa: S324 (EMV)
        dec = [c for c in h if c.isdigit()]
        dec += [str(int(c, 16) - 10) for c in h if not c.isdigit()]
        return bytes.fromhex("".join(dec[:16]))
    return bytes.fromhex(digits[-16:].rjust(16, "0"))


def profile(cvn: int) -> Cvn:
    p = CVNS.get(cvn)
    if p is None:
        raise HsmInputError(f"cryptogram version {cvn} is not supported "
                            f"({', '.join(map(str, CVNS))})")
    return p


def cvn_of(tags: Mapping[str, bytes]) -> int:
    """The CVN the card wrote in its IAD: Visa format 0/1 (length 06, CVN in byte 3),
    Mastercard M/Chip (CVN in byte 2: 0x10 = 16, 0x11 = 17)."""
    iad = tags.get("9F10") or b""
    if len(iad) >= 7 and iad[0] == 0x06 and iad[2] in (10, 18):
        return iad[2]
    if len(iad) >= 18 and iad[1] in (16, 17):
        return iad[1]
    raise HsmInputError("tag 9F10 (IAD) names no supported cryptogram version")


def arqc_input(tags: Mapping[str, bytes], cvn: int = 18) -> bytes:
    """The bytes the card MACs for its ARQC (pass the same ``cvn`` to the Hsm).
    Missing or wrongly sized tags raise ``HsmInputError`` (naming the tag only)."""
    prof = profile(cvn)
    out = bytearray()
    for tag, size in BASE_TAGS:
        value = tags.get(tag)
        if value is None or len(value) != size:
            raise HsmInputError(f"tag {tag} missing or not {size} bytes")
        out += value
    iad = tags.get("9F10")
    if iad is None or not prof.min_iad <= len(iad) <= 32:
        raise HsmInputError("tag 9F10 (IAD) missing or of bad length")
    for part in prof.iad:
        out += iad[part]
    return bytes(out)


def atc_of(tags: Mapping[str, bytes]) -> bytes:
    atc = tags.get("9F36")
    if atc is None or len(atc) != 2:
        raise HsmInputError("tag 9F36 (ATC) missing or not 2 bytes")
    return bytes(atc)
