"""A pyiso8583 spec compiled once into plain per-field tuples: the common case of
``iso8583.decode`` / ``iso8583.encode`` at a third of their cost.

pyiso8583 reads every field's spec dict, builds a second dict of encoded parts and
intersects sets of 192 field numbers on every call; for the four conversions of one
authorization that was most of the codec's time. This module does the same bit work
for the spec features our dialects use (ASCII / EBCDIC / binary data and lengths,
BCD nibbles with a left pad) and gives the same field strings.

It never decides an edge case itself: anything it does not take plainly (a length
that is not digits, a field the spec lacks, data that does not decode, trailing
bytes, a tertiary bitmap, an encode error) raises ``Fallback``, and the dialect asks
pyiso8583, which then gives its own answer or its own error. So a malformed message
costs two attempts and is judged exactly as before. ``tests/codecs/test_iso8583_wire.py``
checks results against pyiso8583 on generated messages and on mutated bytes.
"""

from __future__ import annotations

import binascii
from typing import Any, NamedTuple

# bit offsets (1..8, most significant first) set in each byte value
_BITS = tuple(tuple(b for b in range(1, 9) if v >> (8 - b) & 1) for v in range(256))


class Fallback(Exception):
    """Not the plain case: pyiso8583 decides."""


class _Field(NamedTuple):
    number: int  # first: a list of fields sorts in wire order
    key: str
    len_type: int
    len_enc: str  # "b" (binary big-endian) or a text codec
    max_len: int
    data_enc: str  # "b" (raw bytes shown as hex) or a text codec
    nibbles: bool  # length counts BCD nibbles
    pad: str  # left pad nibble of an odd nibble count
    len_tables: tuple[bytes, bytes] | None  # (decode, encode): see _latin1_tables
    data_tables: tuple[bytes, bytes] | None


def _latin1_tables(encoding: str) -> tuple[bytes, bytes] | None:
    """For a one-byte code that maps its 256 bytes onto the 256 Latin-1 characters
    (EBCDIC cp500, cp037): translation tables, so that ``data.decode(encoding)`` is
    ``data.translate(dec).decode("latin-1")`` and ``text.encode(encoding)`` is
    ``text.encode("latin-1").translate(enc)``, both in C without the codec's Python
    ``decode`` / ``encode`` call (~250 ns each, on every EBCDIC field and length).
    Exact: every byte decodes, and a character outside the code is outside Latin-1
    and raises the same UnicodeEncodeError. None for any other code (ASCII, "b")."""
    if encoding == "b":
        return None
    try:
        chars = bytes(range(256)).decode(encoding)
    except (UnicodeError, LookupError):
        return None
    if len(chars) != 256 or len(set(chars)) != 256 or max(map(ord, chars)) > 0xFF:
        return None
    latin1 = chars.encode("latin-1")
    return (bytes.maketrans(bytes(range(256)), latin1),
            bytes.maketrans(latin1, bytes(range(256))))


class Wire:
    def __init__(self, spec: dict[str, dict[str, Any]]) -> None:
        self.usable = (spec["h"]["max_len"] <= 0 and "1" in spec
                       and spec["1"]["data_enc"] == spec["p"]["data_enc"])
        self.type_enc = spec["t"]["data_enc"]
        self.map_enc = spec["p"]["data_enc"]
        self.fields: dict[int, _Field] = {}
        for key, f in spec.items():
            if not key.isdigit() or key in ("1", "65"):
                continue
            nibbles = f.get("len_count", "bytes") == "nibbles"
            if f["len_enc"] == "bcd" or "right_pad" in f or (nibbles and f["data_enc"] != "b"):
                continue  # not taken here: pyiso8583 handles such a field
            self.fields[int(key)] = _Field(int(key), key, f["len_type"], f["len_enc"],
                                           f["max_len"], f["data_enc"], nibbles,
                                           str(f.get("left_pad", ""))[:1],
                                           _latin1_tables(f["len_enc"]),
                                           _latin1_tables(f["data_enc"]))
        # encode: by the field's key as the dialect gives it (exactly str(number))
        self.by_key = {f.key: f for f in self.fields.values() if 1 < f.number <= 128}

    # -- decode ---------------------------------------------------------------------
    def decode(self, s: bytes) -> dict[str, str]:
        if not self.usable:
            raise Fallback
        out: dict[str, str] = {}
        width = 2 if self.type_enc == "b" else 4
        raw = s[:width]
        if len(raw) != width:
            raise Fallback
        out["t"] = raw.hex().upper() if self.type_enc == "b" else _text(raw, self.type_enc)
        i, numbers = self._bitmap(s, width, "p", 0, out)
        if numbers and numbers[0] == 1:
            i, more = self._bitmap(s, i, "1", 64, out)
            numbers = numbers[1:] + more
        if 65 in numbers:  # a tertiary bitmap
            raise Fallback
        fields = self.fields
        try:
            for number in numbers:
                f = fields.get(number)
                if f is None:
                    raise Fallback
                # one field, inline (this loop is most of a decode): unpacked once,
                # no call per field; what does not decode plainly falls back
                _, key, len_type, len_enc, max_len, data_enc, nibbles, pad, ltab, dtab = f
                if len_type == 0:
                    n = max_len
                else:
                    j = i + len_type
                    raw = s[i:j]
                    if len(raw) != len_type:
                        raise Fallback
                    if len_enc == "b":
                        n = int.from_bytes(raw, "big")
                    else:
                        digits = (raw.translate(ltab[0]).decode("latin-1") if ltab
                                  else raw.decode(len_enc))
                        if not (digits.isascii() and digits.isdigit()):
                            raise Fallback
                        n = int(digits)
                    if n > max_len:
                        raise Fallback
                    i = j
                if n == 0:
                    out[key] = ""
                    continue
                size = (n + 1) // 2 if nibbles else n
                j = i + size
                data = s[i:j]
                if len(data) != size:
                    raise Fallback
                if data_enc == "b":
                    value = data.hex().upper()
                    if nibbles and n & 1:
                        if not pad or value[:1] != pad:
                            raise Fallback
                        value = value[1:]
                elif dtab:
                    value = data.translate(dtab[0]).decode("latin-1")
                else:
                    value = data.decode(data_enc)
                out[key] = value
                i = j
        except (UnicodeError, LookupError):  # text that is not in the field's codec
            raise Fallback from None
        if i != len(s):
            raise Fallback
        return out

    def _bitmap(self, s: bytes, i: int, key: str, offset: int, out: dict[str, str],
                ) -> tuple[int, list[int]]:
        if self.map_enc == "b":
            bitmap = s[i:i + 8]
            if len(bitmap) != 8:
                raise Fallback
            out[key] = bitmap.hex().upper()
            i += 8
        else:
            raw = s[i:i + 16]
            if len(raw) != 16:
                raise Fallback
            out[key] = text = _text(raw, self.map_enc)
            try:
                bitmap = bytes.fromhex(text)
            except ValueError:
                raise Fallback from None
            if len(bitmap) != 8:
                raise Fallback
            i += 16
        numbers = [offset + k * 8 + b for k, byte in enumerate(bitmap) for b in _BITS[byte]]
        numbers.sort()
        return i, numbers

    # -- encode ---------------------------------------------------------------------
    def encode(self, doc: dict[str, Any]) -> bytes:
        if not self.usable:
            raise Fallback
        by_key = self.by_key
        chosen = []
        primary = secondary = 0
        for key in doc:
            f = by_key.get(key)
            if f is None:
                if key == "t":
                    continue
                raise Fallback  # a bitmap given, a field the spec lacks, "02"...
            chosen.append(f)
            number = f[0]
            if number <= 64:
                primary |= 1 << (64 - number)
            else:
                secondary |= 1 << (128 - number)
        chosen.sort()
        mti = doc.get("t")
        if not isinstance(mti, str):
            raise Fallback
        parts = [_hex(mti, 2) if self.type_enc == "b" else _encoded(mti, self.type_enc, 4)]
        if secondary:
            primary |= 1 << 63
        parts.append(self._bitmap_bytes(primary))
        if secondary:
            parts.append(self._bitmap_bytes(secondary))
        append = parts.append
        try:
            for f in chosen:
                # one field, inline as in decode (no call per field); what does not
                # encode plainly falls back
                _, key, len_type, len_enc, max_len, data_enc, nibbles, pad, ltab, dtab = f
                value = doc[key]
                if type(value) is not str:
                    raise Fallback
                if data_enc == "b":
                    text = value
                    if nibbles and len(value) & 1:
                        if not pad:
                            raise Fallback
                        text = pad + value
                    data = binascii.a2b_hex(text)
                    n = len(value) if nibbles else len(data)
                elif dtab:
                    data = value.encode("latin-1").translate(dtab[1])
                    n = len(data)
                else:
                    data = value.encode(data_enc)
                    n = len(data)
                if len_type == 0:
                    if n != max_len:
                        raise Fallback
                    append(data)
                    continue
                if n > max_len:
                    raise Fallback
                if len_enc == "b":
                    prefix = n.to_bytes(len_type, "big")
                else:
                    digits = f"{n:0{len_type}d}"
                    prefix = (digits.encode("latin-1").translate(ltab[1]) if ltab
                              else digits.encode(len_enc))
                    if len(prefix) != len_type:
                        raise Fallback
                append(prefix)
                append(data)
        # text outside the field's code, hex that is not hex (binascii.Error is a
        # ValueError), a length its binary prefix cannot hold
        except (ValueError, LookupError, OverflowError):
            raise Fallback from None
        return b"".join(parts)

    def _bitmap_bytes(self, bits: int) -> bytes:
        raw = bits.to_bytes(8, "big")
        if self.map_enc == "b":
            return raw
        return _encoded(raw.hex().upper(), self.map_enc, 16)


def _text(raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except (UnicodeError, LookupError):
        raise Fallback from None


def _encoded(text: str, encoding: str, size: int) -> bytes:
    try:
        raw = text.encode(encoding)
    except (UnicodeError, LookupError):
        raise Fallback from None
    if len(raw) != size:
        raise Fallback
    return raw


def _hex(text: str, size: int) -> bytes:
    try:
        raw = binascii.a2b_hex(text)
    except (ValueError, binascii.Error):
        raise Fallback from None
    if len(raw) != size:
        raise Fallback
    return raw
