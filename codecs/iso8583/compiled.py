"""A dialect's plain case compiled into one decode and one encode function: bytes
straight to ``Message`` attributes and back, with no field dict in between.

``wire.py`` does pyiso8583's bit work at a third of its cost, but a message still
went bytes -> field dict -> hooks -> ``Message`` (and back), with a tuple unpacked, a
dict lookup and a type dispatch per field: most of the four conversions of one
authorization. Here every field of the spec becomes a few lines of straight code with
its layout, length, codec and canonical type written in as constants, generated once
per dialect (like ``message._copier``).

It takes only what is plain and decides nothing itself: a length that is not digits
or too long, text outside the field's code, non-digits in a numeric field, a field it
has no code for, a non-empty ``Message.other`` on encode, trailing bytes... raise,
and the dialect runs its general path (``wire.py``, then pyiso8583), which gives the
answer or the error it always gave. So every input check stays, and a malformed
message costs one more attempt. ``tests/codecs/test_iso8583_compiled.py`` checks
that both paths give the same ``Message`` and the same bytes.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

from payswitch.codecs.iso8583.message import FIELDS, KIND_BY_DE, NAME_BY_DE, Message
from payswitch.codecs.iso8583.wire import Wire, _Field, _latin1_tables

Decoder = Callable[[bytes], Message]
Encoder = Callable[[Message], bytes]
Hook = Callable[[str, str], str]  # (wire or canonical string, field key) -> the other


class NotPlain(Exception):
    """Raised by generated code: the general path decides."""


def compile_decoder(wire: Wire, hooks: dict[str, Hook],
                    rate: Callable[[str, str, str], Any]) -> Decoder | None:
    """``decode(body) -> Message`` for the plain case of ``wire``'s spec; ``hooks``
    map a wire key to the dialect's ``fields_in`` for that field (str -> str)."""
    if not _compilable(wire):
        return None
    lines = ["def decode(s):", "    if type(s) is not bytes: raise NotPlain",
             "    end = len(s)", "    msg = Message('')"]
    lines += _decode_mti(wire.type_enc)
    lines += _decode_bitmap(wire.map_enc, "m", "4" if wire.type_enc != "b" else "2")
    lines += ["    if m[0] & 128:"]
    lines += ["    " + x for x in _decode_bitmap(wire.map_enc, "m2", "i")]
    lines += ["        if m2[0] & 128: raise NotPlain",  # a tertiary bitmap
              "    else:", "        m2 = None"]
    lines += ["    " + x for x in _decode_fields(wire, hooks, "m", 1)]
    lines.append("    if m2 is not None:")
    lines += ["        " + x for x in _decode_fields(wire, hooks, "m2", 65)]
    lines += ["    if i != end: raise NotPlain", "    return msg"]
    return _build(lines, "decode", wire, hooks=hooks, rate=rate)


def _decode_fields(wire: Wire, hooks: dict[str, Hook], bitmap: str, first: int,
                   ) -> list[str]:
    """Lines reading the 64 fields of ``bitmap`` in order: per byte of the bitmap
    one test, per set bit the field's own code (nothing for bytes that are zero)."""
    lines = []
    for k in range(8):
        inner = []
        for b in range(8):
            number = first + 8 * k + b
            if number in (1, 65):  # bitmaps, read before
                continue
            f = wire.fields.get(number)
            body = (["raise NotPlain"] if f is None
                    else _decode_field(f, hooks.get(f.key) is not None))
            inner += [f"if c & {128 >> b}:"] + ["    " + x for x in body]
        lines += [f"c = {bitmap}[{k}]", "if c:"] + ["    " + x for x in inner]
    return lines


def _build(lines: list[str], name: str, wire: Wire, **names: Any) -> Callable[..., Any]:
    scope: dict[str, Any] = {
        "NotPlain": NotPlain, "Message": Message, "a2b_hex": binascii.a2b_hex,
        "_mtitab": _latin1_tables(wire.type_enc), **names}
    for f in wire.fields.values():
        if f.data_tables:  # T_k / E_k: a field's EBCDIC <-> Latin-1 translations
            scope[f"T_{f.number}"], scope[f"E_{f.number}"] = f.data_tables
        if f.len_type:
            prefixes = [_prefix(f, n) for n in range(f.max_len + 1)]
            scope[f"P_{f.number}"] = prefixes
            scope[f"L_{f.number}"] = {p: n for n, p in enumerate(prefixes) if n and p}
    exec("\n".join(lines), scope)  # noqa: S102 (generated from our own spec tables)
    return scope[name]


def _prefix(f: _Field, n: int) -> bytes | None:
    """Field ``f``'s length prefix for ``n``, as wire.py writes it (None: it cannot)."""
    if f.len_enc == "b":
        return n.to_bytes(f.len_type, "big") if n < 256 ** f.len_type else None
    digits = f"{n:0{f.len_type}d}"
    try:
        raw = digits.encode("latin-1").translate(f.len_tables[1]) if f.len_tables \
            else digits.encode(f.len_enc)
    except (UnicodeError, LookupError):
        return None
    return raw if len(raw) == f.len_type else None


def _compilable(wire: Wire) -> bool:
    return (wire.usable and wire.map_enc in ("b", "ascii")
            and wire.type_enc in ("b", "ascii", "cp500", "cp037"))


def _decode_mti(type_enc: str) -> list[str]:
    if type_enc == "b":
        return ["    if end < 2: raise NotPlain", "    mti = s[:2].hex()",
                "    if not mti.isdigit(): raise NotPlain", "    msg.mti = mti"]
    raw = "s[:4]" if type_enc == "ascii" else "s[:4].translate(_mtitab[0])"
    return ["    if end < 4: raise NotPlain", f"    mti = {raw}",
            "    if not mti.isdigit(): raise NotPlain", "    msg.mti = mti.decode()"]


def _decode_bitmap(map_enc: str, name: str, start: str) -> list[str]:
    size = 8 if map_enc == "b" else 16
    lines = [f"    j = {start} + {size}", "    if j > end: raise NotPlain"]
    if map_enc == "b":
        lines.append(f"    {name} = s[{start}:j]")
    else:  # hex text: bytes.fromhex takes what wire.py's bitmap takes, nothing more
        lines += [f"    {name} = bytes.fromhex(s[{start}:j].decode('ascii'))",
                  f"    if len({name}) != 8: raise NotPlain"]
    return [*lines, "    i = j"]


def _decode_field(f: _Field, hooked: bool) -> list[str]:
    """Lines reading field ``f`` at ``i`` onto ``msg`` (``i`` moved past it). No end
    check per field: a slice past the end is short, ``i`` still moves its full size,
    and the final ``i != end`` refuses the message."""
    number, key, len_type, len_enc, max_len, data_enc, nibbles, pad, ltab, dtab = f
    out: list[str] = []
    if len_type == 0:
        n = str(max_len)
        size = str((max_len + 1) // 2 if nibbles else max_len)
    else:  # L_k: every prefix this field may carry -> its length (1..max), no other
        out += [f"n = L_{number}.get(s[i:i + {len_type}])", "if n is None: raise NotPlain",
                f"i += {len_type}"]
        n, size = "n", "(n + 1) // 2" if nibbles else "n"
    out += [f"d = s[i:i + {size}]", f"i += {size}"]
    name = NAME_BY_DE.get(number)
    kind = KIND_BY_DE.get(number, "") if name else ("mac" if number in (64, 128) else "")
    digits = kind in ("n", "amount", "rate") and not hooked and data_enc != "b"
    # BCD digits: hex() is ASCII, and digits have no case, so the upper-cased text
    # wire.py gives is only needed where a letter may pass (a hook, a letter pad)
    bcd = kind in ("n", "amount", "rate") and not hooked and pad in "0123456789"
    # d (bytes) -> v, the field's wire string as wire.py gives it (or bytes for b)
    if data_enc == "b":
        if kind in ("b", "mac") and not nibbles:
            return out + [f"msg.{name or 'mac'} = d"]
        out.append("v = d.hex()" if bcd else "v = d.hex().upper()")
        if nibbles:
            odd = f"{n} & 1" if n == "n" else str(int(n) & 1)
            if odd != "0":
                check = f"v[:1] != '{pad}'" if pad else "True"
                out += [f"if {odd}:", f"    if {check}: raise NotPlain", "    v = v[1:]"]
    elif dtab or data_enc == "ascii":
        if dtab:  # EBCDIC: its Latin-1 twin (bytes.isdigit takes ASCII digits only)
            out.append(f"d = d.translate(T_{number})")
        if digits:
            out.append("if not d.isdigit(): raise NotPlain")
            if kind == "amount":  # int() of the checked digits, no text made for it
                return out + [f"msg.{name} = int(d)"]
            if kind == "n":
                return out + [f"msg.{name} = d.decode()"]
            out.append("v = d.decode()")
        elif dtab:
            out.append("v = d.decode('latin-1')")
        else:  # ASCII is UTF-8's fast path, then refused past ASCII
            out += ["v = d.decode()", "if not v.isascii(): raise NotPlain"]
    else:
        out.append(f"v = d.decode('{data_enc}')")
    if hooked:
        out.append(f"v = hooks['{key}'](v, '{key}')")
    if kind == "mac":
        return out + ["msg.mac = bytes.fromhex(v)"]
    if not name:
        return out + [f"msg.other[{number}] = v"]
    if kind == "an":
        return out + [f"msg.{name} = v"]
    if kind == "b":
        return out + [f"msg.{name} = bytes.fromhex(v)"]
    if bcd and data_enc == "b":
        out.append("if not v.isdigit(): raise NotPlain")
    elif not digits:
        out.append("if not (v.isascii() and v.isdigit()): raise NotPlain")
    if kind == "n":
        return out + [f"msg.{name} = v"]
    if kind == "amount":
        return out + [f"msg.{name} = int(v)"]
    return out + [f"msg.{name} = rate('rate', v, '{key}')"]


def compile_encoder(wire: Wire, hooks: dict[str, Hook],
                    to_rate: Callable[[Any, int], str]) -> Encoder | None:
    """``encode(msg) -> body`` for the plain case; ``hooks`` map a wire key to the
    dialect's ``fields_out`` for that field (canonical str -> wire str)."""
    if not _compilable(wire):
        return None
    lines = ["def encode(msg):", "    if msg.other: raise NotPlain", "    mti = msg.mti",
             "    if type(mti) is not str or len(mti) != 4 or not (mti.isascii() and"
             " mti.isdigit()): raise NotPlain"]
    if wire.type_enc == "b":
        lines.append("    parts = [a2b_hex(mti), None]")
    elif wire.type_enc == "ascii":
        lines.append("    parts = [mti.encode(), None]")
    else:
        lines.append("    parts = [mti.encode().translate(_mtitab[1]), None]")
    lines += ["    app = parts.append", "    p = q = 0", "    mac = msg.mac",
              "    far = msg.network_code is not None or msg.original_data is not None"]
    for number, name, kind in _encode_order():
        f = wire.fields.get(number)
        value = "mac" if kind == "mac" else f"msg.{name}"
        guard = {64: "mac is not None and not far", 128: "mac is not None and far"}.get(
            number, "v is not None")
        lines += [f"    v = {value}", f"    if {guard}:"]
        body = (["raise NotPlain"] if f is None
                else _encode_field(f, kind, hooks.get(f.key) is not None))
        lines += ["        " + x for x in body]
    lines += ["    if q: p |= 1 << 63"]
    if wire.map_enc == "b":
        lines += ["    parts[1] = p.to_bytes(8, 'big') + q.to_bytes(8, 'big') if q"
                  " else p.to_bytes(8, 'big')"]
    else:
        lines += ["    parts[1] = (b'%016X%016X' % (p, q)) if q else (b'%016X' % p)"]
    lines.append("    return b''.join(parts)")
    return _build(lines, "encode", wire, hooks=hooks,
                  to_rate=to_rate)


def _encode_order() -> list[tuple[int, str, str]]:
    """The named fields and the MAC (DE64, or DE128 past a secondary field) in wire
    order; ``to_fields`` puts the MAC in DE128 when a named field is past DE64."""
    order = [*FIELDS, (64, "mac", "mac"), (128, "mac", "mac")]
    return sorted(order)


def _encode_field(f: _Field, kind: str, hooked: bool) -> list[str]:
    """Lines appending field ``f`` (its canonical value in ``v``) to ``parts``."""
    number, key, len_type, len_enc, max_len, data_enc, nibbles, pad, ltab, dtab = f
    bit = f"p |= {1 << (64 - number)}" if number <= 64 else f"q |= {1 << (128 - number)}"
    fixed = _encode_fixed(f, kind) if len_type == 0 and not hooked else None
    if fixed is not None:
        return [*fixed, bit]
    out: list[str] = []
    raw = data_enc == "b" and not nibbles
    if kind in ("b", "mac"):
        out.append("if type(v) is not bytes: raise NotPlain")
        if not raw or hooked:
            out.append("v = v.hex().upper()")
    elif kind == "n":
        out.append("if type(v) is not str or not (v.isascii() and v.isdigit()):"
                   " raise NotPlain")
    elif kind == "an":
        out.append("if type(v) is not str: raise NotPlain")
    elif kind == "amount":
        width = max_len if len_type == 0 else 12
        out += ["if type(v) is not int or v < 0: raise NotPlain", f"v = '%0{width}d' % v"]
    else:
        out.append(f"v = to_rate(v, {number})")
    if hooked:
        out.append(f"v = hooks['{key}'](v, '{key}')")
    # v (wire str, or bytes for a raw binary field) -> d, n (the length it declares)
    if data_enc == "b":
        if kind in ("b", "mac") and raw and not hooked:
            out.append("d = v")
        elif nibbles:
            if not pad:
                out.append("if len(v) & 1: raise NotPlain")
            out += [f"d = a2b_hex('{pad}' + v if len(v) & 1 else v)", "n = len(v)"]
        else:
            out.append("d = a2b_hex(v)")
        if not nibbles:
            out.append("n = len(d)")
    elif dtab:
        out += [f"d = v.encode('latin-1').translate(E_{number})", "n = len(d)"]
    elif data_enc == "ascii":  # ASCII is UTF-8's fast path, once the text is ASCII
        if kind == "an":
            out.append("if not v.isascii(): raise NotPlain")
        out += ["d = v.encode()", "n = len(d)"]
    else:
        out += [f"d = v.encode('{data_enc}')", "n = len(d)"]
    if len_type == 0:
        out += [f"if n != {max_len}: raise NotPlain", "app(d)"]
    else:  # P_k: the prefix of every length up to the field's maximum (None: none)
        out += [f"if n > {max_len}: raise NotPlain", f"prefix = P_{number}[n]",
                "if prefix is None: raise NotPlain", "app(prefix)", "app(d)"]
    return out + [bit]


def _encode_fixed(f: _Field, kind: str) -> list[str] | None:
    """The lines of a fixed-length digits or ASCII text field (most of a message),
    with its length checked first, so that its parity and size are constants: the
    bytes ``_encode_field``'s general lines give, or NotPlain where they raise."""
    size, data_enc, nibbles, pad = f.max_len, f.data_enc, f.nibbles, f.pad
    bcd = data_enc == "b" and nibbles
    if not (bcd or data_enc == "ascii") or kind not in ("n", "amount", "an"):
        return None
    if kind == "an":
        if bcd:
            return None
        return [f"if type(v) is not str or len(v) != {size} or not v.isascii():"
                " raise NotPlain", "app(v.encode())"]
    if kind == "n":
        out = [f"if type(v) is not str or len(v) != {size} or not (v.isascii() and"
               " v.isdigit()): raise NotPlain"]
    elif not bcd:  # an ASCII amount: its digits formatted as bytes at once
        return ["if type(v) is not int or v < 0: raise NotPlain", f"v = b'%0{size}d' % v",
                f"if len(v) != {size}: raise NotPlain", "app(v)"]
    else:
        out = ["if type(v) is not int or v < 0: raise NotPlain", f"v = '%0{size}d' % v",
               f"if len(v) != {size}: raise NotPlain"]
    if not bcd:
        return [*out, "app(v.encode())"]
    if size & 1:  # an odd digit count takes the left pad nibble; none: not plain
        return [*out, f"app(a2b_hex('{pad}' + v))" if pad else "raise NotPlain"]
    return [*out, "app(a2b_hex(v))"]
