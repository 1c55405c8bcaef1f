"""BER-TLV as EMV uses it (DE55 ICC data): tags, lengths, nested templates.

- Tags are 1 to 4 bytes: a first byte whose low five bits are all 1 (``9F``, ``DF``)
  is followed by more tag bytes while their top bit is set (``9F26``, ``DF8101``).
  ``Tlv.tag`` is the tag bytes as an int (``0x9F26``).
- Lengths: one byte below 0x80; ``81 xx``, ``82 xxxx`` (up to ``84``) above. The
  indefinite form (``80``) is not allowed in EMV and is refused.
- A tag whose first byte has bit 6 (0x20) set is constructed (``70``, ``77``, ``E1``):
  its value is a sequence of TLVs, decoded into ``Tlv.value`` as a tuple of children.
  A primitive tag's value is ``bytes``.
- Order and unknown tags are kept, so ``encode_tlv(decode_tlv(b)) == b`` for any ``b``
  in the minimal (DER) length form EMV cards produce.

Bad data (truncated, a length longer than what follows, a tag of more than 4 bytes,
nesting deeper than ``MAX_DEPTH``) is a ``CodecError`` naming the offset and the tag,
never the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from payswitch.codecs.errors import CodecError

MAX_TAG_BYTES = 4
MAX_LENGTH_BYTES = 4
MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Tlv:
    tag: int
    value: bytes | tuple[Tlv, ...]

    @property
    def constructed(self) -> bool:
        return is_constructed(self.tag)

    @property
    def tag_hex(self) -> str:
        return tag_bytes(self.tag).hex().upper()

    def __repr__(self) -> str:
        # A TLV can hold track 2 equivalent data (57) or the PAN (5A): lengths only.
        if isinstance(self.value, tuple):
            return f"Tlv({self.tag_hex}, {list(self.value)!r})"
        return f"Tlv({self.tag_hex}, <{len(self.value)} bytes>)"


def tag_bytes(tag: int) -> bytes:
    if not isinstance(tag, int) or tag < 0:
        raise CodecError("TLV tag is not a non-negative int")
    if tag == 0:
        return b"\x00"  # EMV pads with 00; kept, so that decode + encode loses nothing
    raw = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
    end, _ = _read_tag(raw, 0)
    if end != len(raw) or len(raw) > MAX_TAG_BYTES:
        raise CodecError(f"{raw.hex().upper()} is not a well-formed BER tag")
    return raw


def is_constructed(tag: int) -> bool:
    return bool(tag_bytes(tag)[0] & 0x20)


def as_tag(tag: int | str) -> int:
    """``0x9F26`` or ``"9F26"`` -> ``0x9F26``."""
    if isinstance(tag, str):
        try:
            tag = int(tag, 16)
        except ValueError:
            raise CodecError("TLV tag is not hex") from None
    tag_bytes(tag)
    return tag


# -- decoding ------------------------------------------------------------------------
def _read_tag(data: bytes, i: int, end: int | None = None) -> tuple[int, int]:
    end = len(data) if end is None else end
    start = i
    if i >= end:
        raise CodecError(f"TLV truncated at offset {i}: tag expected")
    first = data[i]
    i += 1
    if first & 0x1F == 0x1F:
        while True:
            if i >= end:
                raise CodecError(f"TLV truncated at offset {i}: tag continues")
            b = data[i]
            i += 1
            if i - start > MAX_TAG_BYTES:
                raise CodecError(f"TLV tag at offset {start} longer than {MAX_TAG_BYTES} bytes")
            if not b & 0x80:
                break
    return i, int.from_bytes(data[start:i], "big")


def _read_length(data: bytes, i: int, end: int, tag_hex: str) -> tuple[int, int]:
    if i >= end:
        raise CodecError(f"TLV {tag_hex} truncated at offset {i}: length expected")
    first = data[i]
    i += 1
    if first < 0x80:
        return i, first
    n = first & 0x7F
    if n == 0:
        raise CodecError(f"TLV {tag_hex} uses the indefinite length form")
    if n > MAX_LENGTH_BYTES:
        raise CodecError(f"TLV {tag_hex} length of {n} bytes is not supported")
    if i + n > end:
        raise CodecError(f"TLV {tag_hex} truncated at offset {i}: length bytes")
    return i + n, int.from_bytes(data[i:i + n], "big")


def _decode(data: bytes, start: int, end: int, depth: int) -> list[Tlv]:
    if depth > MAX_DEPTH:
        raise CodecError(f"TLV nested deeper than {MAX_DEPTH} levels")
    items: list[Tlv] = []
    i = start
    while i < end:
        j, tag = _read_tag(data, i, end)
        tag_hex = data[i:j].hex().upper()
        k, length = _read_length(data, j, end, tag_hex)
        if k + length > end:
            raise CodecError(f"TLV {tag_hex} at offset {i} claims {length} bytes, "
                             f"{end - k} remain")
        if data[i] & 0x20:
            items.append(Tlv(tag, tuple(_decode(data, k, k + length, depth + 1))))
        else:
            items.append(Tlv(tag, data[k:k + length]))
        i = k + length
    return items


def decode_tlv(data: bytes) -> list[Tlv]:
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError("TLV data is not bytes")
    return _decode(bytes(data), 0, len(data), 0)


# -- encoding ------------------------------------------------------------------------
def _length_bytes(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(raw) > MAX_LENGTH_BYTES:
        raise CodecError("TLV value too long")
    return bytes((0x80 | len(raw),)) + raw


def _encode(items: Iterable[Tlv], depth: int) -> bytes:
    if depth > MAX_DEPTH:
        raise CodecError(f"TLV nested deeper than {MAX_DEPTH} levels")
    out = bytearray()
    for item in items:
        if not isinstance(item, Tlv):
            raise CodecError("TLV list holds something that is not a Tlv")
        tag = tag_bytes(item.tag)
        if isinstance(item.value, tuple):
            if not tag[0] & 0x20:
                raise CodecError(f"primitive tag {tag.hex().upper()} given children")
            value = _encode(item.value, depth + 1)
        elif isinstance(item.value, (bytes, bytearray)):
            value = bytes(item.value)
        else:
            raise CodecError(f"TLV {tag.hex().upper()} value is not bytes or children")
        out += tag + _length_bytes(len(value)) + value
    return bytes(out)


def encode_tlv(items: Iterable[Tlv]) -> bytes:
    return _encode(items, 0)


# -- helpers -------------------------------------------------------------------------
def find(items: Sequence[Tlv], tag: int | str) -> Tlv | None:
    """The first TLV with ``tag``, depth first through constructed templates."""
    want = as_tag(tag)
    for item in items:
        if item.tag == want:
            return item
        if isinstance(item.value, tuple):
            hit = find(item.value, want)
            if hit is not None:
                return hit
    return None


def get_tag(data: bytes | Sequence[Tlv], tag: int | str) -> bytes | None:
    """The value of the first primitive ``tag`` in ``data`` (bytes or decoded), or None."""
    items = decode_tlv(data) if isinstance(data, (bytes, bytearray)) else data
    hit = find(items, tag)
    if hit is None:
        return None
    if isinstance(hit.value, tuple):
        return encode_tlv(hit.value)
    return hit.value


def set_tag(items: Sequence[Tlv], tag: int | str, value: bytes) -> list[Tlv]:
    """A copy of ``items`` with the first ``tag`` (at any depth) set to ``value``, or
    the tag appended at the top level when absent. Other tags keep their order."""
    want = as_tag(tag)
    done, out = _set(items, want, bytes(value))
    if not done:
        out.append(Tlv(want, bytes(value)))
    return out


def _set(items: Sequence[Tlv], tag: int, value: bytes) -> tuple[bool, list[Tlv]]:
    out: list[Tlv] = []
    done = False
    for item in items:
        if not done and item.tag == tag:
            out.append(Tlv(tag, value))
            done = True
        elif not done and isinstance(item.value, tuple):
            done, children = _set(item.value, tag, value)
            out.append(Tlv(item.tag, tuple(children)))
        else:
            out.append(item)
    return done, out
