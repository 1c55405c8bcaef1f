"""Visa BASE I style: 22-byte header, BCD numerics, EBCDIC (cp500) text, binary bitmap.

Wire layout of one message (what follows the ``vap`` frame prefix)::

    H1..H12 (22 bytes) | MTI (2 bytes BCD) | bitmap(s) (8/16 bytes) | fields

Fields, by ISO 8583:1987 type (see ``fieldtypes``):

- numeric: packed BCD, two digits a byte; an odd digit count gets a leading 0 nibble.
  Variable-length numerics have a 1-byte binary length counting digits.
- track 2/3: BCD with hex ``D`` as the separator (the canonical message uses ``=``),
  1-byte binary length counting characters, leading 0 nibble when odd.
- text: EBCDIC (cp500); variable length = 1-byte binary length counting bytes.
- binary: raw bytes; variable length = 1-byte binary length counting bytes.
- DE22 is n4 on Visa: the canonical 3 digits plus a trailing 0 (filler).

The header (``VisaHeader``) travels in ``Message.header``; H1 and H4 are computed on
encode and checked on decode. ``reply_header`` swaps the station ids for a response.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, cast

from iso8583.specs import default_ascii

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583.dialect import Dialect
from payswitch.codecs.iso8583.fieldtypes import BINARY, NUMERIC, TRACK
from payswitch.codecs.iso8583.message import Message

HEADER_BYTES = 22
REJECT_HEADER_BYTES = 26  # H1 of a reject header (H13 bitmap, H14 reject code)
HEADER_FORMAT = 0x01
TEXT_FORMAT = 0x02
MAX_MESSAGE_BYTES = 0xFFFF  # H4 is 2 bytes
_WIRE_TRACK = re.compile(r"[0-9D]+")
_CANONICAL_TRACK = re.compile(r"[0-9=]+")


@dataclass(frozen=True, slots=True)
class VisaHeader:
    """BASE I message header, H2 and H5..H12 (H1 and H4 are lengths, computed)."""

    destination_id: str = "000000"  # H5, 6 digits, 3 bytes BCD
    source_id: str = "000000"  # H6, 6 digits, 3 bytes BCD
    round_trip: int = 0  # H7, round-trip control information
    base1_flags: bytes = b"\x00\x00"  # H8
    message_status: bytes = b"\x00\x00\x00"  # H9
    batch_number: int = 0  # H10
    reserved: bytes = b"\x00\x00\x00"  # H11
    user_info: int = 0  # H12
    header_format: int = HEADER_FORMAT  # H2
    text_format: int = TEXT_FORMAT  # H3

    def to_bytes(self, total_len: int) -> bytes:
        try:  # this very header, checked and built before: only H4 is new
            built, head, tail = _BUILT[self]
        except (KeyError, TypeError):  # TypeError: a field that is not hashable
            built = None
        if built is not self:  # an equal one is not enough: 1.0 == 1 but is no byte
            head, tail = self._checked_parts()  # hashable once it passes
            _remember(_BUILT, self, (self, head, tail))
        if total_len > MAX_MESSAGE_BYTES:
            raise CodecError("Visa message longer than H4 can express")
        return head + total_len.to_bytes(2, "big") + tail

    def _checked_parts(self) -> tuple[bytes, bytes]:
        """H1..H3 and H5..H12, every field checked."""
        for name in ("destination_id", "source_id"):
            v = getattr(self, name)
            if not (isinstance(v, str) and len(v) == 6 and v.isdigit() and v.isascii()):
                raise CodecError(f"Visa header {name} is not 6 digits")
        for name, n in (("base1_flags", 2), ("message_status", 3), ("reserved", 3)):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != n:
                raise CodecError(f"Visa header {name} is not {n} bytes")
        for name in ("round_trip", "batch_number", "user_info", "header_format",
                     "text_format"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= 0xFF:
                raise CodecError(f"Visa header {name} is not one byte")
        return bytes((HEADER_BYTES, self.header_format, self.text_format)), b"".join((
            bytes.fromhex(self.destination_id),
            bytes.fromhex(self.source_id),
            bytes((self.round_trip,)),
            self.base1_flags,
            self.message_status,
            bytes((self.batch_number,)),
            self.reserved,
            bytes((self.user_info,)),
        ))

    @classmethod
    def from_bytes(cls, data: bytes) -> VisaHeader:
        """Parse and check H1..H12 of ``data`` (the whole message, header first)."""
        if len(data) < HEADER_BYTES:
            raise CodecError("shorter than the 22-byte Visa header")
        if data[0] != HEADER_BYTES:
            raise CodecError("Visa header H1 is not 22 (reject headers are not supported)")
        if int.from_bytes(data[3:5], "big") != len(data):
            raise CodecError("Visa header H4 does not match the message length")
        if cls is not VisaHeader:
            return cls._parsed(data)
        key = bytes(data[1:3] + data[5:HEADER_BYTES])  # all but H1 (checked), H4 (length)
        header = _PARSED.get(key)
        if header is None:
            header = cls._parsed(data)
            _remember(_PARSED, key, header)
        return header

    @classmethod
    def _parsed(cls, data: bytes) -> VisaHeader:
        dest, src = data[5:8].hex(), data[8:11].hex()
        if not (dest.isdigit() and src.isdigit()):
            raise CodecError("Visa header station id is not BCD")
        return cls(destination_id=dest, source_id=src, round_trip=data[11],
                   base1_flags=data[12:14], message_status=data[14:17],
                   batch_number=data[17], reserved=data[18:21], user_info=data[21],
                   header_format=data[1], text_format=data[2])


# A link's headers repeat (same stations, flags, status): each distinct one is parsed,
# or checked and built, once; a frozen header is safe to share. Bounded: cleared when
# full, so a peer sending ever-new headers costs a parse each, never memory.
_PARSED: dict[bytes, VisaHeader] = {}
_BUILT: dict[VisaHeader, tuple[VisaHeader, bytes, bytes]] = {}
_REMEMBERED = 256
_DEFAULT = VisaHeader()


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _REMEMBERED:
        cache.clear()
    cache[key] = value


def reply_header(h: VisaHeader) -> VisaHeader:
    """The header of the response to a message with header ``h``: stations swapped."""
    return dataclasses.replace(h, destination_id=h.source_id, source_id=h.destination_id)


def _visa_spec() -> dict[str, dict[str, Any]]:
    spec: dict[str, dict[str, Any]] = {
        "h": {**default_ascii["h"]},
        "t": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 2,
              "desc": "Message Type (BCD)"},
        "p": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 8,
              "desc": "Bitmap, Primary"},
    }
    for key, base in default_ascii.items():
        if not key.isdigit():
            continue
        de = int(key)
        fixed = base["len_type"] == 0
        max_len = cast(int, base["max_len"])  # pyiso8583 types its spec values as object
        f: dict[str, Any] = {"desc": base["desc"], "len_enc": "b",
                             "len_type": 0 if fixed else 1}
        if de in BINARY:
            # default_ascii carries binary fields as hex: two characters a byte.
            f.update(data_enc="b", max_len=max_len // 2 if fixed else min(max_len // 2, 255))
        elif de in NUMERIC or de in TRACK:
            f.update(data_enc="b", len_count="nibbles", left_pad="0",
                     max_len=max_len if fixed else min(max_len, 255))
        else:
            f.update(data_enc="cp500", max_len=max_len if fixed else min(max_len, 255))
        spec[key] = f
    spec["22"].update(max_len=4)  # Visa: n4, the canonical n3 plus a 0 filler
    spec["55"].update(max_len=255)
    return spec


def _track_in(track: str, key: str) -> str:
    if not _WIRE_TRACK.fullmatch(track):
        raise CodecError("track data has nibbles other than digits and D", field=key)
    return track.replace("D", "=")


def _track_out(track: str, key: str) -> str:
    if not _CANONICAL_TRACK.fullmatch(track):
        raise CodecError("track data has characters other than digits and =", field=key)
    return track.replace("=", "D")


def _pem_in(pem: str, key: str) -> str:
    if pem[3:] != "0":
        raise CodecError("DE22 filler digit is not 0", field=key)
    return pem[:3]


def _pem_out(pem: str, key: str) -> str:
    if len(pem) != 3:
        raise CodecError("POS entry mode is not 3 digits", field=key)
    return pem + "0"


class Visa(Dialect):
    name = "visa"
    spec = _visa_spec()

    def split_header(self, data: bytes) -> tuple[Any, bytes]:
        try:
            return VisaHeader.from_bytes(data), data[HEADER_BYTES:]
        except CodecError as e:
            # A wrong H4 (or a reject header) still leaves MTI and STAN readable, and
            # the switch needs them to answer DE39 30.
            if data and data[0] in (HEADER_BYTES, REJECT_HEADER_BYTES):
                e.mti, e.stan = self.peek(data[data[0]:])
            raise

    def join_header(self, msg: Message, body: bytes) -> bytes:
        header = msg.header if msg.header is not None else _DEFAULT
        if not isinstance(header, VisaHeader):
            raise CodecError("Message.header is not a VisaHeader", mti=msg.mti, stan=msg.stan)
        return header.to_bytes(HEADER_BYTES + len(body)) + body

    hooks_in = {"35": _track_in, "36": _track_in, "22": _pem_in}
    hooks_out = {"35": _track_out, "36": _track_out, "22": _pem_out}


DIALECT = Visa()
