"""What a link MAC covers, and where it goes: pure functions, shared by the switch and
the network simulators so that both sides MAC exactly the same bytes.

Rule (every dialect): the MAC is the last field of the message, DE64, or DE128 when
the secondary bitmap is present. The MAC input is the encoded message *with* the MAC
field's bitmap bit set, up to and not including the MAC's own bytes: the dialect's
header (Visa BASE I), MTI, bitmaps and every other field. To build it, the message is
encoded once with eight zero bytes as its MAC (so lengths and bitmaps are final), the
placeholder is cut off the end, the MAC computed over the rest and appended in the
dialect's form (8 raw bytes in Visa and Mastercard, 16 hex characters in iso87ascii).
The MAC itself (retail MAC or AES-CMAC, 8 bytes) is computed by the HSM with the
link's ZAK; this module never sees a key.
"""

from __future__ import annotations

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583.dialect import Dialect
from payswitch.codecs.iso8583.message import Message

MAC_BYTES = 8
_ZERO = bytes(MAC_BYTES)


def _split(payload: bytes, mac: bytes) -> tuple[bytes, bool] | None:
    """(body, hex form?) when ``payload`` ends with ``mac`` in either form, else None."""
    if payload.endswith(mac):
        return payload[: -len(mac)], False
    text = mac.hex().upper().encode()
    if payload.endswith(text):
        return payload[: -len(text)], True
    return None


def unsigned(dialect: Dialect, msg: Message) -> tuple[bytes, bool]:
    """(MAC input, hex form?) of ``msg`` about to be sent on a MACed link."""
    encoded = dialect.encode(msg.replace(mac=_ZERO))
    split = _split(encoded, _ZERO)
    if split is None:  # a dialect that does not put DE64/DE128 last: a bug, say so
        raise CodecError(f"{dialect.name}: the MAC is not the last field")
    return split


def signed(body: bytes, hex_form: bool, mac: bytes) -> bytes:
    """The payload to send: the MAC input followed by the MAC in the dialect's form."""
    if len(mac) != MAC_BYTES:
        raise ValueError("a link MAC is 8 bytes")
    return body + (mac.hex().upper().encode() if hex_form else mac)


def mac_input(payload: bytes, msg: Message) -> bytes | None:
    """The bytes the sender MACed, from a received payload and its decoded message;
    None when it carries no MAC, or the MAC is not the payload's last field."""
    if msg.mac is None or len(msg.mac) != MAC_BYTES:
        return None
    split = _split(payload, msg.mac)
    return split[0] if split else None
