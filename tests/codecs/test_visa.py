"""Visa BASE I dialect: hand-written byte vectors, round trips, hostile bytes."""

import contextlib

import pytest
from codec_strategies import digits, messages
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583 import Message, get
from payswitch.codecs.iso8583.visa import VisaHeader, reply_header

VISA = get("visa")

# A 0100 written out by hand from the BASE I layout, not by the code under test.
HEADER = bytes.fromhex(
    "16"        # H1 header length 22
    "01"        # H2 header format
    "02"        # H3 text format
    "0050"      # H4 total length 80 = 22 header + 58 message
    "000001"    # H5 destination station id, BCD
    "123456"    # H6 source station id, BCD
    "00"        # H7 round-trip control
    "0000"      # H8 BASE I flags
    "000000"    # H9 message status flags
    "07"        # H10 batch number
    "000000"    # H11 reserved
    "00"        # H12 user info
)
BODY = bytes.fromhex(
    "0100"                      # MTI, BCD
    "7024040020808000"          # bitmap: DE 2 3 4 | 11 14 | 22 | - | 35 | 41 | 49 | -
    "10" "4761739001010010"     # DE2 length 16 digits, BCD
    "000000"                    # DE3 processing code
    "000000001234"              # DE4 amount 12.34
    "381274"                    # DE11 STAN
    "2512"                      # DE14 expiry YYMM
    "0510"                      # DE22 n4: 051 + filler 0
    "17" "04761739001010010D251210"  # DE35 23 characters: leading 0 nibble, D separator
    "E3C5D9D4F0F0F0F1"          # DE41 "TERM0001" in EBCDIC
    "0840"                      # DE49 840, leading 0 nibble
)
VECTOR = HEADER + BODY
MSG = Message(
    mti="0100", pan="4761739001010010", processing_code="000000", amount_minor=1234,
    stan="381274", expiry="2512", pos_entry_mode="051",
    track2="4761739001010010=251210", terminal_id="TERM0001", currency="840",
    header=VisaHeader(destination_id="000001", source_id="123456", batch_number=7),
)


def test_hand_vector_decodes():
    assert len(BODY) == 58
    assert VISA.decode(VECTOR) == MSG


def test_hand_vector_encodes_byte_for_byte():
    assert VISA.encode(MSG).hex() == VECTOR.hex()


def test_odd_length_pan_gets_a_leading_zero_nibble():
    msg = Message(mti="0100", pan="4000001234562", stan="000001")
    body = VISA.encode(msg)[22:]
    # MTI, bitmap (DE2, DE11), length 13, 0 + 13 digits, STAN
    assert body.hex() == "0100" "4020000000000000" "0d" "04000001234562" "000001"


def test_h4_and_h1_are_checked():
    with pytest.raises(CodecError, match="H4"):
        VISA.decode(VECTOR + b"\x00")
    with pytest.raises(CodecError, match="H1"):
        VISA.decode(b"\x1a" + VECTOR[1:])
    with pytest.raises(CodecError):
        VISA.decode(VECTOR[:10])


def test_header_errors_still_carry_mti_and_stan():
    with pytest.raises(CodecError, match="H4") as e:
        VISA.decode(VECTOR + b"\x00")
    assert (e.value.mti, e.value.stan) == ("0100", "381274")


def test_reply_header_swaps_stations_and_h4_follows_the_reply():
    reply = MSG.replace(mti="0110", response_code="00", auth_code="A1B2C3",
                        header=reply_header(MSG.header))
    assert reply.header.destination_id == "123456"
    assert reply.header.source_id == "000001"
    wire = VISA.encode(reply)
    assert wire[5:8] == bytes.fromhex("123456") and wire[8:11] == bytes.fromhex("000001")
    assert int.from_bytes(wire[3:5], "big") == len(wire)
    assert VISA.decode(wire) == reply


def test_default_header_when_none():
    wire = VISA.encode(MSG.replace(header=None))
    assert VISA.decode(wire).header == VisaHeader()


headers = st.builds(
    VisaHeader, digits(6, 6), digits(6, 6), st.integers(0, 255), st.binary(min_size=2, max_size=2),
    st.binary(min_size=3, max_size=3), st.integers(0, 255), st.binary(min_size=3, max_size=3),
    st.integers(0, 255),
)


@settings(max_examples=150)
@given(messages(VISA, header=headers, overrides={"pos_entry_mode": digits(3, 3)}))
def test_round_trip(msg):
    assert VISA.decode(VISA.encode(msg)) == msg


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_codec_error(data):
    with contextlib.suppress(CodecError):
        VISA.decode(data)


@settings(max_examples=200)
@given(st.binary(max_size=120))
def test_random_body_behind_a_valid_header_raises_only_codec_error(data):
    total = 22 + len(data)
    wire = VisaHeader().to_bytes(total) + data
    with contextlib.suppress(CodecError):
        VISA.decode(wire)


def test_merchant_name_is_cp500_not_cp037():
    name = "SHOP [1]! A^B|C".ljust(40)
    msg = Message(mti="0100", stan="000001", merchant_name=name, header=VisaHeader())
    body = bytes.fromhex("0100" "0020000000200000" "000001"
                         "E2C8D6D7404AF15A4F40C15FC2BBC3" + "40" * 25)
    wire = VisaHeader().to_bytes(22 + len(body)) + body
    assert VISA.encode(msg) == wire
    assert VISA.decode(wire) == msg


def test_a_header_met_before_still_gets_its_own_length_and_checks():
    """Headers are parsed and built once per distinct header: H4 is still each
    message's own, and an equal header whose field is no byte (1.0 == 1) is refused."""
    visa = get("visa")
    short, long_ = (Message(mti="0800", stan="000001", network_code="301"),
                    Message(mti="0800", stan="000002", network_code="301", rrn="R" * 12))
    for _ in range(2):
        for msg in (short, long_):
            wire = visa.encode(msg)
            assert int.from_bytes(wire[3:5], "big") == len(wire)
            assert visa.decode(wire).header == VisaHeader()
    visa.encode(Message(mti="0800", stan="000003", header=VisaHeader(round_trip=1)))
    with pytest.raises(CodecError, match="round_trip"):
        visa.encode(Message(mti="0800", stan="000003", header=VisaHeader(round_trip=1.0)))
    wire = visa.encode(short)
    with pytest.raises(CodecError, match="H4"):
        visa.decode(wire + b"\x00")


def test_ever_new_headers_are_each_parsed_and_not_kept():
    """A peer sending a new header every message costs a parse each, not memory."""
    from payswitch.codecs.iso8583 import visa as visa_module
    visa = get("visa")
    for n in range(1000):
        header = VisaHeader(destination_id=f"{n:06d}", source_id="000001")
        wire = visa.encode(Message(mti="0800", stan="000001", header=header))
        assert visa.decode(wire).header == header
    assert len(visa_module._PARSED) <= visa_module._REMEMBERED
    assert len(visa_module._BUILT) <= visa_module._REMEMBERED
