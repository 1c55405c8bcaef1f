"""Mastercard style: EBCDIC (cp500) numerics and text, binary bitmap, DE48 with PDS.

Wire layout::

    MTI (4 EBCDIC digits) | bitmap(s) (8/16 bytes) | fields

Fields keep the ISO 8583:1987 sizes; every digit, letter and length prefix is EBCDIC
(``F0``..``F9`` for digits), binary fields (PIN block, DE55, MAC) are raw bytes behind
an EBCDIC length. DE55 is LLL b..255.

DE48 (additional data, private use) is a transaction category code (one character)
followed by subelements, each a 2-digit tag, a 2-digit length and that many
characters. ``parse_de48`` and ``build_de48`` convert between the string the
canonical ``Message.additional_data`` keeps and ``(tcc, {tag: value})``; a DE48 that
does not parse is refused on decode and on encode (CodecError, field 48), so that what
this dialect writes it can read back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from iso8583.specs import default_ascii

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583.dialect import Dialect
from payswitch.codecs.iso8583.fieldtypes import BINARY
from payswitch.codecs.iso8583.message import Message

EBCDIC = "cp500"
_TCC_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def parse_de48(de48: str) -> tuple[str, dict[str, str]]:
    """``"T0105ABCDE"`` -> ``("T", {"01": "ABCDE"})``. Order kept; duplicates refused."""
    if not isinstance(de48, str) or not de48:
        raise CodecError("DE48 is empty", field="48")
    tcc = de48[0]
    if tcc not in _TCC_CHARS:
        raise CodecError("DE48 transaction category code is not A-Z or 0-9", field="48")
    subs: dict[str, str] = {}
    i, n = 1, len(de48)
    while i < n:
        head = de48[i:i + 4]
        if len(head) < 4 or not (head.isascii() and head.isdigit()):
            raise CodecError(f"DE48 subelement at offset {i} has no 2-digit tag and length",
                             field="48")
        tag, length = head[:2], int(head[2:])
        value = de48[i + 4:i + 4 + length]
        if len(value) != length:
            raise CodecError(f"DE48 subelement {tag} is truncated", field="48")
        if tag in subs:
            raise CodecError(f"DE48 subelement {tag} appears twice", field="48")
        subs[tag] = value
        i += 4 + length
    return tcc, subs


def build_de48(tcc: str, subelements: Mapping[str, str]) -> str:
    """Inverse of ``parse_de48``."""
    if not isinstance(tcc, str) or len(tcc) != 1 or tcc not in _TCC_CHARS:
        raise CodecError("DE48 transaction category code is not one of A-Z, 0-9", field="48")
    parts = [tcc]
    for tag, value in subelements.items():
        if not (isinstance(tag, str) and len(tag) == 2 and tag.isascii() and tag.isdigit()):
            raise CodecError("DE48 subelement tag is not 2 digits", field="48")
        if not isinstance(value, str) or len(value) > 99:
            raise CodecError(f"DE48 subelement {tag} is not text of at most 99 characters",
                             field="48")
        parts.append(f"{tag}{len(value):02d}{value}")
    return "".join(parts)


def de48_view(msg: Message) -> tuple[str, dict[str, str]] | None:
    """The parsed view of ``msg.additional_data`` (None when DE48 is absent)."""
    return None if msg.additional_data is None else parse_de48(msg.additional_data)


def _mastercard_spec() -> dict[str, dict[str, Any]]:
    spec: dict[str, dict[str, Any]] = {
        "h": {**default_ascii["h"]},
        "t": {**default_ascii["t"], "data_enc": EBCDIC, "len_enc": EBCDIC},
        "p": {"data_enc": "b", "len_enc": EBCDIC, "len_type": 0, "max_len": 8,
              "desc": "Bitmap, Primary"},
    }
    for key, base in default_ascii.items():
        if not key.isdigit():
            continue
        f = {**base, "len_enc": EBCDIC}
        if int(key) in BINARY:
            f.update(data_enc="b", max_len=cast(int, base["max_len"]) // 2)
        else:
            f.update(data_enc=EBCDIC)
        spec[key] = f
    spec["55"].update(max_len=255)
    return spec


def _de48_checked(de48: str, key: str) -> str:
    """What this dialect writes it can read back: a DE48 that does not parse is refused."""
    parse_de48(de48)
    return de48


class Mastercard(Dialect):
    name = "mastercard"
    spec = _mastercard_spec()

    hooks_in = hooks_out = {"48": _de48_checked}


DIALECT = Mastercard()
