"""The ARQC input for the cryptogram versions the simulators use (pure functions).

The card and the issuer must MAC exactly the same bytes; these builders are the one
place both the terminal generator (acting as the card) and the issuer simulators take
them from. Tags are hex strings ("9F02") mapped to their values (``bytes``), as read
from DE55 by the BER-TLV codec.

* CVN 10 (Visa VIS 1.4/1.5): the recommended tags + ATC + CVR (IAD bytes 4-7),
  ISO 9797-1 padding method 1 (``padding=1``).
* CVN 18 (Visa VIS 1.6) and the EMV common-core default: the recommended tags + ATC +
  the whole IAD (9F10), padding method 2 (``padding=2``).

Session key: EMV common session key from the option A ICC master key, for both.
"""

from __future__ import annotations

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
    iad: str  # "cvr" (IAD bytes 4-7) or "full"


CVN10 = Cvn(10, 1, "cvr")
CVN18 = Cvn(18, 2, "full")
CVNS = {10: CVN10, 18: CVN18}


def arqc_input(tags: Mapping[str, bytes], cvn: int = 18) -> bytes:
    """The bytes the card MACs for its ARQC (pass ``padding=CVNS[cvn].padding`` to the
    Hsm). Missing or wrongly sized tags raise ``HsmInputError`` (naming the tag only)."""
    profile = CVNS.get(cvn)
    if profile is None:
        raise HsmInputError(f"cryptogram version {cvn} is not supported (10, 18)")
    out = bytearray()
    for tag, size in BASE_TAGS:
        value = tags.get(tag)
        if value is None or len(value) != size:
            raise HsmInputError(f"tag {tag} missing or not {size} bytes")
        out += value
    iad = tags.get("9F10")
    if iad is None or not 7 <= len(iad) <= 32:
        raise HsmInputError("tag 9F10 (IAD) missing or of bad length")
    out += iad[3:7] if profile.iad == "cvr" else iad
    return bytes(out)


def atc_of(tags: Mapping[str, bytes]) -> bytes:
    atc = tags.get("9F36")
    if atc is None or len(atc) != 2:
        raise HsmInputError("tag 9F36 (ATC) missing or not 2 bytes")
    return bytes(atc)
