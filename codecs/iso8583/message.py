"""The canonical message: what the switch works on, whatever dialect came in.

Named, typed fields with ISO 8583:1987 meaning. Amounts are ``int`` minor units,
currencies ISO 4217 numeric strings, binary fields ``bytes``, the conversion rate a
``Decimal``. Dates and times stay in their ISO 8583 digit forms (``transmission_time``
is ``MMDDhhmmss`` UTC) because the wire carries no year and guessing one is not a
codec's job. Fields with no name here travel in ``other`` (DE number -> str or bytes)
so that nothing both dialects can carry is lost.

A dialect converts at the edge in both directions: iso93ascii maps 1100 <-> 0100 and
3-digit action codes <-> 2-digit response codes; Visa and Mastercard keep their network
header in ``header``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from payswitch.codecs.pan import mask_pan


@dataclass(slots=True)
class Message:
    mti: str
    pan: str | None = None  # DE2
    processing_code: str | None = None  # DE3, 6 digits
    amount_minor: int | None = None  # DE4
    settlement_amount_minor: int | None = None  # DE5
    billing_amount_minor: int | None = None  # DE6, cardholder billing
    transmission_time: str | None = None  # DE7, MMDDhhmmss UTC
    conversion_rate: Decimal | None = None  # DE10, cardholder billing rate
    stan: str | None = None  # DE11, 6 digits
    local_time: str | None = None  # DE12, hhmmss
    local_date: str | None = None  # DE13, MMDD
    expiry: str | None = None  # DE14, YYMM
    settlement_date: str | None = None  # DE15, MMDD
    mcc: str | None = None  # DE18
    acquirer_country: str | None = None  # DE19
    pos_entry_mode: str | None = None  # DE22, 3 digits (PAN mode + PIN capability)
    card_sequence: str | None = None  # DE23
    pos_condition: str | None = None  # DE25
    acquirer_id: str | None = None  # DE32
    forwarding_id: str | None = None  # DE33
    track2: str | None = None  # DE35, '=' as separator
    rrn: str | None = None  # DE37, 12 characters
    auth_code: str | None = None  # DE38
    response_code: str | None = None  # DE39, 2 characters (ISO 8583:1987 codes)
    terminal_id: str | None = None  # DE41, 8 characters
    merchant_id: str | None = None  # DE42, 15 characters
    merchant_name: str | None = None  # DE43, 40 characters
    additional_data: str | None = None  # DE48
    currency: str | None = None  # DE49
    settlement_currency: str | None = None  # DE50
    billing_currency: str | None = None  # DE51
    pin_block: bytes | None = None  # DE52, 8 bytes (16 for AES format 4)
    security_control: str | None = None  # DE53
    additional_amounts: str | None = None  # DE54
    emv: bytes | None = None  # DE55, BER-TLV
    network_code: str | None = None  # DE70, 3 digits: 001 sign-on, 002 sign-off, 301 echo
    original_data: str | None = None  # DE90, 42 digits
    mac: bytes | None = None  # DE64 (or DE128 when the secondary bitmap is present)
    other: dict[int, str | bytes] = field(default_factory=dict)
    header: Any = None  # dialect's network header (e.g. Visa BASE I), None for plain ISO
    # ISO 8583:1993 only (iso93ascii); other dialects neither read nor write these.
    local_year: str | None = None  # YY of the 1993 DE12 (YYMMDDhhmmss); 1987 has no year
    action_code: str | None = None  # 1993 DE39 as received, when response_code alone
    #                                 would not give it back (e.g. 907 -> "91", 911 is "91")

    @property
    def is_request(self) -> bool:
        """An even third MTI digit (by table, a third of int()'s cost: read four times
        per authorization)."""
        even = _EVEN.get(self.mti[2])
        return even if even is not None else int(self.mti[2]) % 2 == 0

    @property
    def response_mti(self) -> str:
        """0100 -> 0110, 0101 (repeat) -> 0110, 0420 -> 0430."""
        return self.mti[:2] + str(int(self.mti[2]) + 1) + "0"

    def replace(self, **changes: Any) -> Message:
        """A copy with ``changes`` (what ``dataclasses.replace`` gives: the same field
        values, ``other`` and ``header`` shared, a TypeError for a name that is no
        field) at a fifth of its cost: it is called on every forwarded request and
        every link MAC, and ``dataclasses.replace`` checks and passes ~45 keyword
        arguments through ``__init__`` each time."""
        if not _FIELD_NAMES.issuperset(changes):
            raise TypeError(f"not Message fields: {sorted(set(changes) - _FIELD_NAMES)}")
        new = copy_message(self)
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    def __repr__(self) -> str:
        # Never a clear PAN, track, PIN block, CVV2 or EMV data in a repr (logs).
        parts = [f"mti={self.mti}"]
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "mti" or v is None or v == {}:
                continue
            if f.name == "pan":
                v = mask_pan(v)
            elif f.name in ("track2", "pin_block", "emv", "mac", "other", "additional_data"):
                # additional_data: DE48 may carry a CVV2 (subelement 92)
                v = "<redacted>"
            parts.append(f"{f.name}={v!r}")
        return f"Message({', '.join(parts)})"

    __str__ = __repr__


def copier(names: Collection[str] | None = None) -> Callable[[Message], Message]:
    """A function that makes a Message with the fields ``names`` (None: all) of its
    argument and every other field at its default, one attribute at a time (generated
    once: plain attribute loads and stores, no keyword arguments)."""
    lines = ["def copy(m):", "    new = new_message(Message)"]
    scope: dict[str, Any] = {"Message": Message, "new_message": object.__new__}
    for f in dataclasses.fields(Message):
        if names is None or f.name in names:
            lines.append(f"    new.{f.name} = m.{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"make_{f.name}"] = f.default_factory
            lines.append(f"    new.{f.name} = make_{f.name}()")
        elif f.default is dataclasses.MISSING:  # mti
            raise ValueError(f"Message.{f.name} has no default: it must be copied")
        else:
            scope[f"default_{f.name}"] = f.default
            lines.append(f"    new.{f.name} = default_{f.name}")
    lines.append("    return new")
    exec("\n".join(lines), scope)  # noqa: S102 (the dataclass's own field names)
    return cast(Callable[[Message], Message], scope["copy"])


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Message))
_EVEN = {str(d): d % 2 == 0 for d in range(10)}  # MTI digit 3 -> a request?
# a copy to change attribute by attribute (slots: a name that is no field still fails)
copy_message = copier()


# (DE number, canonical name, kind). kind: n = digits, an = text, amount = int minor
# units (12 digits), rate = DE10 form, b = bytes. Shared by every dialect.
FIELDS: tuple[tuple[int, str, str], ...] = (
    (2, "pan", "n"),
    (3, "processing_code", "n"),
    (4, "amount_minor", "amount"),
    (5, "settlement_amount_minor", "amount"),
    (6, "billing_amount_minor", "amount"),
    (7, "transmission_time", "n"),
    (10, "conversion_rate", "rate"),
    (11, "stan", "n"),
    (12, "local_time", "n"),
    (13, "local_date", "n"),
    (14, "expiry", "n"),
    (15, "settlement_date", "n"),
    (18, "mcc", "n"),
    (19, "acquirer_country", "n"),
    (22, "pos_entry_mode", "n"),
    (23, "card_sequence", "n"),
    (25, "pos_condition", "n"),
    (32, "acquirer_id", "n"),
    (33, "forwarding_id", "n"),
    (35, "track2", "an"),
    (37, "rrn", "an"),
    (38, "auth_code", "an"),
    (39, "response_code", "an"),
    (41, "terminal_id", "an"),
    (42, "merchant_id", "an"),
    (43, "merchant_name", "an"),
    (48, "additional_data", "an"),
    (49, "currency", "n"),
    (50, "settlement_currency", "n"),
    (51, "billing_currency", "n"),
    (52, "pin_block", "b"),
    (53, "security_control", "n"),
    (54, "additional_amounts", "an"),
    (55, "emv", "b"),
    (70, "network_code", "n"),
    (90, "original_data", "n"),
)
NAME_BY_DE = {de: name for de, name, _ in FIELDS}
KIND_BY_DE = {de: kind for de, _, kind in FIELDS}
