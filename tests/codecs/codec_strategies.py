"""Hypothesis strategies for canonical Messages that a given dialect can carry.

Values are generated from the dialect's own pyiso8583 spec (fixed or variable, the
maximum length in that dialect's units), so every field is exercised at its limits.
"""

from __future__ import annotations

import string
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from payswitch.codecs.iso8583.message import FIELDS, Message

TEXT = string.ascii_letters + string.digits + " .,-/*#&'()"


def _units(spec: dict[str, Any], kind: str) -> int:
    """A field's maximum length in canonical units (digits, characters or bytes)."""
    n = spec["max_len"]
    if kind == "b" and spec["data_enc"] != "b":
        return n // 2  # carried as hex text
    return n


def digits(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=string.digits, min_size=lo, max_size=hi)


def track2(max_len: int = 37) -> st.SearchStrategy[str]:
    return st.builds(lambda pan, rest: f"{pan}={rest}", digits(12, 19),
                     digits(4, max_len - 20)).filter(lambda t: len(t) <= max_len)


def field_value(spec: dict[str, Any], kind: str, de: int) -> st.SearchStrategy[Any]:
    n = _units(spec, kind)
    fixed = spec["len_type"] == 0
    lo = n if fixed else 1
    if kind == "amount":
        return st.integers(min_value=0, max_value=10**n - 1)
    if kind == "rate":
        return st.builds(lambda places, v: Decimal(v).scaleb(-places),
                         st.integers(0, 7), st.integers(0, 10**7 - 1))
    if kind == "n":
        return digits(lo, n)
    if kind == "b":
        return st.binary(min_size=lo, max_size=n)
    if de == 35:
        return track2(n)
    return st.text(alphabet=TEXT, min_size=lo, max_size=min(n, 120))


def messages(dialect, *, skip: frozenset[str] = frozenset(), overrides=None,
             mtis=("0100", "0110", "0200", "0210", "0420", "0430", "0800", "0810"),
             header=None) -> st.SearchStrategy[Message]:
    """Messages with any subset of the named fields ``dialect`` carries."""
    header = st.none() if header is None else header
    overrides = dict(overrides or {})
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for de, name, kind in FIELDS:
        if name in skip:
            continue
        strat = overrides.pop(name, None)
        if strat is None:
            strat = field_value(dialect.spec[str(de)], kind, de)
        parts[name] = st.none() | strat
    for name, strat in overrides.items():
        parts[name] = st.none() | strat
    mac = st.none() | st.binary(min_size=8, max_size=8)
    other = st.fixed_dictionaries({}, optional={
        de: field_value(dialect.spec[str(de)], kind, de) for de, kind in OTHER_FIELDS
    })
    return st.builds(lambda mti, hdr, m, o, **kw: Message(mti=mti, header=hdr, mac=m,
                                                          other=o, **kw),
                     st.sampled_from(mtis), header, mac, other, **parts)


# Unnamed fields that travel in Message.other as wire strings (text and digits).
OTHER_FIELDS = ((60, "an"), (61, "an"), (62, "an"), (63, "an"), (100, "n"), (102, "an"))


def mutated(data, body: bytes) -> bytes:
    """``body`` after 1-3 hostile edits drawn from ``data``: a byte flipped, the tail
    cut, or junk appended."""
    out = bytearray(body)
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["flip", "cut", "add"]))
        if action == "flip" and out:
            i = data.draw(st.integers(0, len(out) - 1))
            out[i] = data.draw(st.integers(0, 255))
        elif action == "cut" and out:
            out = out[:data.draw(st.integers(0, len(out) - 1))]
        else:
            out += data.draw(st.binary(min_size=1, max_size=4))
    return bytes(out)
