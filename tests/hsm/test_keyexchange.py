"""The 0800 key-change layout per dialect (round trip through each codec's bytes) and
the key versions' grace period (a fake clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.iso8583 import get
from payswitch.codecs.iso8583.visa import VisaHeader
from payswitch.hsm import keyexchange as kx
from payswitch.hsm.errors import HsmInputError

HEX = "0123456789ABCDEF"


@given(dialect=st.sampled_from(["visa", "mastercard", "iso87ascii"]),
       key_type=st.sampled_from(["ZPK", "ZAK"]),
       kcv=st.text(HEX, min_size=6, max_size=6),
       body=st.text(HEX, min_size=16, max_size=64))  # a TDES block: 80
def test_key_change_round_trips_through_the_wire(dialect, key_type, kcv, body):
    block = "B0080P0TE00N0000" + body  # the codec does not look inside the block
    msg = kx.build(dialect, key_type, kcv, block, stan="000042",
                   transmission_time="1128094500")
    if dialect == "visa":
        msg.header = VisaHeader()
    wire = get(dialect).encode(msg)
    back = get(dialect).decode(wire)
    assert back.mti == "0800" and back.network_code == kx.KEY_CHANGE
    assert kx.parse(dialect, back) == kx.KeyChange(key_type, kcv, block)


@pytest.mark.parametrize("dialect", ["visa", "mastercard", "iso87ascii"])
def test_an_echo_is_not_a_key_change(dialect):
    from payswitch.codecs.iso8583 import Message
    with pytest.raises(HsmInputError):
        kx.parse(dialect, Message(mti="0800", stan="000001", network_code="301"))


def test_old_key_accepted_until_the_grace_period_ends():
    now = [100.0]
    ring = kx.KeyRing("zpk.visa", 60, lambda: now[0])
    assert ring.accepted() == ["zpk.visa"]
    ring.offer("zpk.visa.2")
    assert ring.current == "zpk.visa" and ring.accepted() == ["zpk.visa", "zpk.visa.2"]
    assert ring.rotate("zpk.visa.2") is None
    assert ring.accepted() == ["zpk.visa.2", "zpk.visa"]
    now[0] += 59.9
    assert "zpk.visa" in ring.accepted()
    now[0] += 0.2
    assert ring.accepted() == ["zpk.visa.2"]
    assert ring.rotate("zpk.visa.3") == "zpk.visa"  # falls off: the caller may delete it


def test_withdrawn_offer_is_forgotten():
    ring = kx.KeyRing("zak.visa", 60, lambda: 0.0)
    ring.offer("zak.visa.2")
    assert ring.withdraw() == "zak.visa.2"
    assert ring.accepted() == ["zak.visa"]
