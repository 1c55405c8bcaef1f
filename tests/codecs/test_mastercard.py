"""Mastercard dialect: EBCDIC everywhere, binary bitmap, DE48 TCC + PDS subelements."""

import contextlib
import string

import iso8583
import pytest
from codec_strategies import TEXT, messages
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583 import Message, get
from payswitch.codecs.iso8583.mastercard import build_de48, de48_view, parse_de48

MC = get("mastercard")

# Written out by hand: EBCDIC digits are F0..F9, 'A'..'I' C1..C9, 'J'..'R' D1..D9,
# 'S'..'Z' E2..E9.
VECTOR = bytes.fromhex(
    "F0F1F0F0"                              # MTI 0100
    "7020040000818000"                      # bitmap: 2 3 4 | 11 | 22 | - | - | 41 48 | 49 | -
    "F1F6" "F5F4F1F3F3F3F0F0F8F9F0F1F0F4F3F4"  # DE2 LL=16, PAN 5413330089010434
    "F0F0F0F0F0F0"                          # DE3 000000
    "F0F0F0F0F0F0F0F0F1F0F0F0"              # DE4 000000001000
    "F0F0F0F0F4F2"                          # DE11 000042
    "F9F0F1"                                # DE22 901
    "C1E3D4F0F0F0F0F1"                      # DE41 ATM00001
    "F0F0F9" "E3" "F0F1F0F4C1C2C3C4"        # DE48 LLL=009: TCC T, tag 01 len 04 ABCD
    "F8F4F0"                                # DE49 840
)
MSG = Message(mti="0100", pan="5413330089010434", processing_code="000000",
              amount_minor=1000, stan="000042", pos_entry_mode="901",
              terminal_id="ATM00001", additional_data="T0104ABCD", currency="840")


def test_hand_vector_decodes():
    assert MC.decode(VECTOR) == MSG
    assert de48_view(MC.decode(VECTOR)) == ("T", {"01": "ABCD"})


def test_hand_vector_encodes_byte_for_byte():
    assert MC.encode(MSG).hex().upper() == VECTOR.hex().upper()


def test_binary_fields_are_raw_bytes_behind_ebcdic_lengths():
    msg = Message(mti="0100", stan="000001", pin_block=bytes(range(8)),
                  emv=b"\x9f\x27\x01\x80")
    wire = MC.encode(msg)
    # MTI, bitmap (11 | 52 55), STAN, PIN block raw, DE55 LLL=004 then raw TLV
    assert wire.hex().upper() == (
        "F0F1F0F0" "0020000000001200" "F0F0F0F0F0F1" "0001020304050607"
        "F0F0F4" "9F270180"
    )


@pytest.mark.parametrize("bad", ["", "t0104ABCD", "T01", "T0105ABCD", "T0A04ABCD",
                                 "T0101A0101B", "T01-1A"])
def test_malformed_de48_is_a_codec_error(bad):
    with pytest.raises(CodecError) as e:
        parse_de48(bad)
    assert e.value.field == "48"


def test_malformed_de48_on_the_wire_keeps_mti_and_stan():
    fields = {"t": "0100", "11": "000777", "48": "T0199AB"}
    body, _ = iso8583.encode(fields, MC.spec)
    with pytest.raises(CodecError) as e:
        MC.decode(bytes(body))
    assert (e.value.mti, e.value.stan, e.value.field) == ("0100", "000777", "48")
    with pytest.raises(CodecError):
        MC.encode(Message(mti="0100", additional_data="T0199AB"))


subelements = st.dictionaries(st.text(string.digits, min_size=2, max_size=2),
                              st.text(TEXT, max_size=30), max_size=8)
tccs = st.sampled_from("ACFHOPRTUVXZ")
de48s = st.builds(build_de48, tccs, subelements)


@given(tccs, subelements)
def test_de48_round_trip(tcc, subs):
    assert parse_de48(build_de48(tcc, subs)) == (tcc, subs)


@settings(max_examples=150)
@given(messages(MC, overrides={"additional_data": de48s}))
def test_round_trip(msg):
    assert MC.decode(MC.encode(msg)) == msg


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_codec_error(data):
    with contextlib.suppress(CodecError):
        MC.decode(data)


@settings(max_examples=200)
@given(st.text(max_size=60))
def test_random_de48_raises_only_codec_error(text):
    with contextlib.suppress(CodecError):
        assert build_de48(*parse_de48(text)) == text


# cp500 and cp037 (US EBCDIC) differ exactly on characters like these; only a hand
# vector tells them apart (a round trip through one code page cannot).
NAME = "SHOP [1]! A^B|C".ljust(40)
NAME_EBCDIC = "E2C8D6D7404AF15A4F40C15FC2BBC3" + "40" * 25


def test_merchant_name_is_cp500_not_cp037():
    msg = Message(mti="0100", stan="000001", merchant_name=NAME)
    wire = bytes.fromhex("F0F1F0F0" "0020000000200000" "F0F0F0F0F0F1" + NAME_EBCDIC)
    assert MC.encode(msg) == wire
    assert MC.decode(wire) == msg
