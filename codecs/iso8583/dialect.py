"""A dialect = a pyiso8583 spec + conversion between its field strings and ``Message``.

pyiso8583's spec says the bit work (bitmaps, length prefixes, BCD, EBCDIC), done by
``wire.py`` (the spec compiled: same strings, less cost) or, for anything but the plain
case, by pyiso8583 itself; this module does what neither does: typed canonical fields,
content checks (digits where digits are due), and errors that carry MTI and STAN but
never a field's value.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast

import iso8583

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583.compiled import (
    Decoder,
    Encoder,
    Hook,
    NotPlain,
    compile_decoder,
    compile_encoder,
)
from payswitch.codecs.iso8583.message import FIELDS, KIND_BY_DE, NAME_BY_DE, Message
from payswitch.codecs.iso8583.wire import Fallback, Wire

_LONG_DIGITS = re.compile(r"\d{12,}")


def redact(text: str) -> str:
    """Error texts from below may quote bytes; never let a PAN-like run through."""
    return _LONG_DIGITS.sub(lambda m: "*" * len(m.group()), text)


class Dialect:
    """Generic ISO 8583 dialect; subclasses override the hooks for their quirks."""

    name = "generic"
    spec: dict[str, dict[str, Any]] = {}
    # Per wire key, the dialect's conversion of one field's string (in: wire ->
    # ISO 8583:1987, out: back), raising CodecError on a value it refuses. The
    # compiled plain case and fields_in / fields_out both run them.
    hooks_in: dict[str, Hook] = {}
    hooks_out: dict[str, Hook] = {}
    compiled = True  # False: from_fields / to_fields are the dialect's own

    # -- public API -----------------------------------------------------------------
    def decode(self, data: bytes) -> Message:
        if not isinstance(data, (bytes, bytearray)):
            raise CodecError("message is not bytes")
        header, body = self.split_header(bytes(data))
        try:
            msg = self._compiled[0](body)
        except Exception:  # not the plain case: the general path decides
            msg = self._decode_body(body)
        msg.header = header
        return msg

    def _decode_body(self, body: bytes) -> Message:
        try:
            fields = self._decode_fields(body)
        except iso8583.DecodeError as e:
            partial = e.doc_dec
            raise CodecError(redact(e.msg), mti=self._readable_mti(partial.get("t")),
                             stan=_digits_or_none(partial.get("11")), field=e.field) from None
        except Exception as e:  # pyiso8583 can raise others on hostile input
            raise CodecError(f"undecodable message: {type(e).__name__}") from None
        mti = self._readable_mti(fields.get("t"))
        try:
            return self.from_fields(self.fields_in(fields))
        except CodecError as e:
            e.mti = e.mti or mti
            e.stan = e.stan or _digits_or_none(fields.get("11"))
            raise
        except Exception as e:  # a hook tripping on hostile input is still bad input
            raise CodecError(f"undecodable message: {type(e).__name__}", mti=mti,
                             stan=_digits_or_none(fields.get("11"))) from None

    def encode(self, msg: Message) -> bytes:
        try:
            body = self._compiled[1](msg)
        except Exception:  # not the plain case: the general path decides
            body = self._encode_body(msg)
        return self.join_header(msg, body)

    def _encode_body(self, msg: Message) -> bytes:
        fields = self.fields_out(self.to_fields(msg), msg)
        try:
            body: bytes | bytearray = self._wire.encode(fields)
        except Fallback:  # not the plain case: pyiso8583 decides, or words the error
            body = b""
        try:
            body = body or iso8583.encode(fields, self.spec)[0]
        except iso8583.EncodeError as e:
            raise CodecError(redact(e.msg), mti=msg.mti, stan=msg.stan, field=e.field) from None
        return bytes(body)

    @functools.cached_property
    def _wire(self) -> Wire:
        return Wire(self.spec)

    @functools.cached_property
    def _compiled(self) -> tuple[Decoder, Encoder]:
        """The plain case as two generated functions (``compiled.py``), or stand-ins
        that send everything down the general path (a dialect with its own
        ``from_fields`` / ``to_fields``, a spec they cannot take)."""
        decode = encode = None
        if self.compiled:
            decode = compile_decoder(self._wire, self.hooks_in, _to_python)
            encode = compile_encoder(self._wire, self.hooks_out, _rate_to_wire)
        return decode or _not_plain, encode or _not_plain

    def _decode_fields(self, body: bytes) -> dict[str, str]:
        try:
            return self._wire.decode(body)
        except Fallback:  # not the plain case: pyiso8583 decides, or words the error
            return iso8583.decode(body, self.spec)[0]

    def peek(self, body: bytes) -> tuple[str | None, str | None]:
        """Best-effort (MTI, STAN) of a message body that did not decode, for errors
        raised before the body was parsed (a bad network header, say)."""
        try:
            fields, _ = iso8583.decode(body, self.spec)
        except iso8583.DecodeError as e:
            fields = e.doc_dec
        except Exception:
            return None, None
        return self._readable_mti(fields.get("t")), _digits_or_none(fields.get("11"))

    # -- hooks ----------------------------------------------------------------------
    def split_header(self, data: bytes) -> tuple[Any, bytes]:
        return None, data

    def join_header(self, msg: Message, body: bytes) -> bytes:
        return body

    def fields_in(self, fields: dict[str, str]) -> dict[str, str]:
        """Dialect wire strings -> ISO 8583:1987 strings, by ``hooks_in``."""
        for key, hook in self.hooks_in.items():
            value = fields.get(key)
            if value is not None:
                fields[key] = hook(value, key)
        return fields

    def fields_out(self, fields: dict[str, str], msg: Message) -> dict[str, str]:
        """ISO 8583:1987 strings -> this dialect's strings, by ``hooks_out``."""
        try:
            for key, hook in self.hooks_out.items():
                value = fields.get(key)
                if value is not None:
                    fields[key] = hook(value, key)
        except CodecError as e:
            e.mti, e.stan = msg.mti, msg.stan
            raise
        return fields

    def _readable_mti(self, mti: str | None) -> str | None:
        return mti if mti and len(mti) == 4 and mti.isdigit() else None

    # -- canonical conversion -------------------------------------------------------
    def from_fields(self, fields: dict[str, str]) -> Message:
        mti = fields.get("t", "")
        if len(mti) != 4 or not mti.isdigit():
            raise CodecError("MTI is not 4 digits")
        msg = Message(mti=mti)
        for key, value in fields.items():
            known = _BY_KEY.get(key)
            if known is None:
                continue  # "t", "p", "h" and the secondary bitmap
            de, name, kind = known
            if name is None:
                if de == 64 or de == 128:
                    msg.mac = _hex_to_bytes(value, key)
                else:
                    msg.other[de] = value
            elif kind == "an" or (kind == "n" and value.isdigit() and value.isascii()):
                setattr(msg, name, value)  # text, and digits as they are
            else:
                setattr(msg, name, _to_python(kind, value, key))
        return msg

    def to_fields(self, msg: Message) -> dict[str, str]:
        if len(msg.mti) != 4 or not msg.mti.isdigit():
            raise CodecError("MTI is not 4 digits", stan=msg.stan)
        fields = _named_fields(msg, self._field_to_wire)
        for de, value in msg.other.items():
            fields[str(de)] = value.hex().upper() if isinstance(value, bytes) else value
        if msg.mac is not None:  # DE128 when any other field needs the secondary bitmap
            secondary = any(getattr(msg, name) is not None for name in _SECONDARY_NAMED) \
                or any(int(k) > 64 for k in map(str, msg.other) if k.isdigit())
            fields["128" if secondary else "64"] = msg.mac.hex().upper()
        return fields

    def _field_to_wire(self, msg: Message, kind: str, value: Any, key: str, de: int) -> str:
        """A named field that is not plain text or digits, in its wire form."""
        try:
            return _to_wire(kind, value, self.spec.get(key), de)
        except CodecError as e:
            e.mti, e.stan = msg.mti, msg.stan if isinstance(msg.stan, str) else None
            raise


def _fields_reader() -> Callable[[Message, Callable[..., str]], dict[str, str]]:
    """``to_fields``' loop over the named fields, unrolled once into plain attribute
    reads (called twice per authorization; a getattr and a tuple per field were most
    of it). Text, and digits, go as they are; anything else through ``to_wire``."""
    lines = ["def named_fields(msg, to_wire):", "    fields = {'t': msg.mti}"]
    for de, name, kind in FIELDS:
        plain = {"an": "type(v) is str",
                 "n": "type(v) is str and v.isascii() and v.isdigit()"}.get(kind)
        lines += [f"    v = msg.{name}", "    if v is not None:"]
        if plain:
            lines += [f"        if {plain}:", f"            fields['{de}'] = v",
                      "        else:",
                      f"            fields['{de}'] = to_wire(msg, '{kind}', v, '{de}', {de})"]
        else:
            lines.append(f"        fields['{de}'] = to_wire(msg, '{kind}', v, '{de}', {de})")
    lines.append("    return fields")
    scope: dict[str, Any] = {}
    exec("\n".join(lines), scope)  # noqa: S102 (the module's own FIELDS table)
    return cast(Callable[[Message, Callable[..., str]], dict[str, str]],
                scope["named_fields"])


_named_fields = _fields_reader()
# from_fields: a wire key -> (DE, canonical name or None for Message.other, kind)
_BY_KEY: dict[str, tuple[int, str | None, str]] = {
    str(de): (de, NAME_BY_DE.get(de), KIND_BY_DE.get(de, "")) for de in range(2, 193)}
# named fields past DE64 (their presence puts the MAC in DE128)
_SECONDARY_NAMED = tuple(name for de, name, _ in FIELDS if de > 64)


def _not_plain(_: Any) -> Any:
    raise NotPlain


def _digits_or_none(value: str | None) -> str | None:
    return value if value and value.isdigit() else None


def _hex_to_bytes(value: str, key: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise CodecError("binary field is not hex", field=key) from None


def _to_python(kind: str, value: str, key: str) -> Any:
    if kind == "b":
        return _hex_to_bytes(value, key)
    if kind == "an":
        return value
    if not value.isdigit() or not value.isascii():
        raise CodecError("numeric field has non-digits", field=key)
    if kind == "amount":
        return int(value)
    if kind == "rate":
        if len(value) != 8:
            raise CodecError("conversion rate is not 8 digits", field=key)
        return Decimal(int(value[1:])).scaleb(-int(value[0]))
    return value


def _to_wire(kind: str, value: Any, spec: dict[str, Any] | None, de: int) -> str:
    if kind == "amount":
        if not isinstance(value, int) or value < 0:
            raise CodecError("amount must be a non-negative int", field=str(de))
        width = spec["max_len"] if spec and spec["len_type"] == 0 else 12
        return str(value).zfill(width)
    if kind == "rate":
        return _rate_to_wire(value, de)
    if kind == "b":
        if not isinstance(value, (bytes, bytearray)):
            raise CodecError("binary field is not bytes", field=str(de))
        return bytes(value).hex().upper()
    if not isinstance(value, str):
        raise CodecError("field is not a str", field=str(de))
    if kind == "n" and not (value.isascii() and value.isdigit()):
        # what we would send, the peer (and our own decoder) would refuse
        raise CodecError("numeric field has non-digits", field=str(de))
    return value


def _rate_to_wire(rate: Decimal, de: int) -> str:
    """DE10: first digit = decimal places, then 7 digits. Exact or refused, no rounding."""
    for places in range(8):
        scaled = rate.scaleb(places)
        if scaled == scaled.to_integral_value() and 0 <= scaled < 10**7:
            return f"{places}{int(scaled):07d}"
    raise CodecError("conversion rate does not fit DE10", field=str(de))


def spec_from(base: dict[str, dict[str, Any]], **overrides: dict[str, Any]) -> dict:
    """A deep copy of ``base`` with some fields replaced (keys like ``f52=``, ``t=``)."""
    spec = copy.deepcopy(base)
    for key, value in overrides.items():
        spec[key.removeprefix("f")] = value
    return spec
