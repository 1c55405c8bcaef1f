"""Dynamic key exchange on a link: the 0800 key-change message and key versions.

The network sends a new working key (ZPK, or ZAK on a MACed link) as a TR-31 key
block under the link's ZMK, with its KCV, in an 0800 whose DE70 is ``161`` (new key).
The receiver imports it under the ZMK (the KCV is checked in the token) and answers
0810 with DE39 ``00``, or ``63`` (security violation) when the block or the KCV is
refused, ``30`` when the message does not parse, ``96`` when its HSM fails. Both sides
keep the key they replace for a grace period (``KeyRing``): a PIN block translated or
a MAC made under the old key just before the switch-over is still accepted.

Where the key travels, per dialect (both sides of this project use this layout):

* ``visa``: DE53 (security-related control information, n16: security format ``20``
  zone key, algorithm ``01`` TDES, key type ``01`` PIN / ``02`` MAC, key index ``01``)
  and DE48 = KCV (6 hex) + TR-31 block. BASE I dynamic key exchange carries its key
  data in DE48 with DE53 naming the key (Visa BASE I "Dynamic Key Exchange", as
  commonly described; the Visa specification itself is not public, so the DE53
  sub-field values here are ours).
* ``mastercard``: DE48 subelement 11 (Mastercard Customer Interface Specification:
  "Key Exchange Block Data") = key class ``PK`` / ``MK`` + KCV + TR-31 block, TCC ``Z``.
  Mastercard's own SE11 layout carries a clear-length key cryptogram; here it carries
  the TR-31 block (at most 99 characters: TDES blocks, version B, only).
* ``iso87ascii`` (and any other): DE53 as for Visa and DE120 (private use) = KCV +
  TR-31 block; ISO 8583:1987 leaves key data to the private fields, DE120 is the one
  conventionally used for key management.

Pure functions on ``codecs.iso8583.Message``; no I/O.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583 import Message
from payswitch.hsm.errors import HsmInputError

KEY_CHANGE = "161"  # DE70: new key
KCV_REFUSED = "63"  # DE39 security violation: block or KCV refused, old key stays
UNPARSED = "30"  # DE39 format error
HSM_FAILED = "96"
KEY_TYPE_CODE = {"ZPK": "01", "ZAK": "02"}  # DE53 positions 5-6
MC_CLASS = {"ZPK": "PK", "ZAK": "MK"}  # DE48 SE11 key class
MC_SE = "11"


@dataclass(frozen=True, slots=True)
class KeyChange:
    key_type: str  # "ZPK" | "ZAK"
    kcv: str  # 6 hex digits, upper case
    block: str  # TR-31 key block


def _de53(key_type: str) -> str:
    return "20" + "01" + KEY_TYPE_CODE[key_type] + "01" + "0" * 8


def build(dialect: str, key_type: str, kcv: str, block: str, *, stan: str,
          transmission_time: str) -> Message:
    """The 0800 key-change request carrying ``block`` (a TR-31 block) and its KCV."""
    if key_type not in KEY_TYPE_CODE:
        raise HsmInputError(f"key change carries a ZPK or a ZAK, not {key_type}")
    data = kcv.upper() + block
    msg = Message(mti="0800", transmission_time=transmission_time, stan=stan,
                  network_code=KEY_CHANGE)
    if dialect == "mastercard":
        from payswitch.codecs.iso8583.mastercard import build_de48
        msg.additional_data = build_de48("Z", {MC_SE: MC_CLASS[key_type] + data})
    elif dialect == "visa":
        msg.security_control = _de53(key_type)
        msg.additional_data = data
    else:
        msg.security_control = _de53(key_type)
        msg.other[120] = data
    return msg


def parse(dialect: str, msg: Message) -> KeyChange:
    """The key change an 0800 carries; ``HsmInputError`` when it carries none."""
    data: str | bytes | None
    try:
        if dialect == "mastercard":
            from payswitch.codecs.iso8583.mastercard import parse_de48
            _, subs = parse_de48(msg.additional_data or "")
            raw = subs.get(MC_SE, "")
            by_class = {v: k for k, v in MC_CLASS.items()}
            key_type, data = by_class.get(raw[:2], ""), raw[2:]
        else:
            ctl = msg.security_control or ""
            by_code = {v: k for k, v in KEY_TYPE_CODE.items()}
            key_type = by_code.get(ctl[4:6], "") if len(ctl) == 16 else ""
            data = msg.additional_data if dialect == "visa" else msg.other.get(120)
    except CodecError:
        raise HsmInputError("key change: key data does not parse") from None
    if not key_type:
        raise HsmInputError("key change: no key type")
    if not isinstance(data, str) or not 6 + 16 <= len(data) <= 999:
        raise HsmInputError("key change: no key data")
    kcv, block = data[:6].upper(), data[6:]
    try:
        bytes.fromhex(kcv)
    except ValueError:
        raise HsmInputError("key change: KCV is not hex") from None
    return KeyChange(key_type, kcv, block)


def new_label(base: str, kcv: str) -> str:
    """The token label of a key received by a key change: the configured label, the
    KCV (so a log line names both) and a random suffix (a resent key is a new object)."""
    return f"{base}.{kcv.lower()}.{secrets.token_hex(3)}"[-64:]


class KeyRing:
    """The versions of one working key (a link's ZPK or ZAK): the key to use, a key
    offered but not yet confirmed by the peer, and the key it replaced, accepted until
    ``grace_s`` after the switch-over. ``accepted()`` is what a verification tries."""

    def __init__(self, label: str, grace_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.current = label
        self.pending: str | None = None
        self.previous: str | None = None
        self.grace_s = grace_s
        self._clock = clock
        self._until = 0.0

    def offer(self, label: str) -> None:
        """Sent to the peer: accept it, keep using the current key until confirmed."""
        self.pending = label

    def withdraw(self) -> str | None:
        """The peer refused the offered key: forget it (the caller deletes it)."""
        label, self.pending = self.pending, None
        return label

    def rotate(self, label: str) -> str | None:
        """Switch over to ``label``. Returns the key retired for good now (the one
        before the previous), if any, for the caller to delete."""
        retired = self.previous if self.previous != self.current else None
        self.previous, self.current, self.pending = self.current, label, None
        self._until = self._clock() + self.grace_s
        return retired

    def in_grace(self) -> bool:
        return self.previous is not None and self._clock() < self._until

    def accepted(self) -> list[str]:
        keys = [self.current]
        if self.pending:
            keys.append(self.pending)
        if self.in_grace() and self.previous:
            keys.append(self.previous)
        return keys
