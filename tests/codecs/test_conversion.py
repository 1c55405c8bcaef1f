"""Dialect to dialect through the canonical Message: a terminal's ASCII 0100 becomes a
Visa 0100, the Visa 0110 becomes the terminal's ASCII 0110, nothing lost on the way.

Every byte string below is written out by hand from the formats.
"""

from codec_strategies import digits, messages
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.codecs.iso8583 import get
from payswitch.codecs.iso8583.mastercard import build_de48
from payswitch.codecs.iso8583.visa import VisaHeader, reply_header
from payswitch.codecs.tlv import decode_tlv

ASCII, VISA, MC, ISO93 = (get(n) for n in ("iso87ascii", "visa", "mastercard", "iso93ascii"))

EMV_HEX = "9F2608" "1122334455667788" "9F2701" "80"  # ARQC + CID, 15 bytes

TERMINAL_0100 = (
    b"0100" b"7020040020808200"         # bitmap: 2 3 4 | 11 | 22 | - | 35 | 41 | 49 55 | -
    b"16" b"4761739001010010" b"000000" b"000000001234" b"000123" b"051"
    b"23" b"4761739001010010=251210" b"TERM0001" b"840"
    b"030" + EMV_HEX.encode()
)
VISA_0100 = bytes.fromhex(
    "16" "01" "02" "005E" "000001" "123456" "00" "0000" "000000" "00" "000000" "00"
    "0100" "7020040020808200"
    "10" "4761739001010010" "000000" "000000001234" "000123" "0510"
    "17" "04761739001010010D251210" "E3C5D9D4F0F0F0F1" "0840"
    "0F" + EMV_HEX
)
VISA_0110 = bytes.fromhex(
    "16" "01" "02" "0047" "123456" "000001" "00" "0000" "000000" "00" "000000" "00"
    "0110" "7020000006808000"           # bitmap: 2 3 4 | 11 | - | - | 38 39 | 41 | 49 | -
    "10" "4761739001010010" "000000" "000000001234" "000123"
    "C1F1C2F2C3F3"                      # DE38 A1B2C3
    "F0F0"                              # DE39 00
    "E3C5D9D4F0F0F0F1" "0840"
)
TERMINAL_0110 = (
    b"0110" b"7020000006808000"
    b"16" b"4761739001010010" b"000000" b"000000001234" b"000123" b"A1B2C3" b"00"
    b"TERM0001" b"840"
)
STATIONS = VisaHeader(destination_id="000001", source_id="123456")


def test_terminal_0100_becomes_visa_0100_byte_for_byte():
    msg = ASCII.decode(TERMINAL_0100)
    assert msg.track2 == "4761739001010010=251210"
    assert decode_tlv(msg.emv)[0].tag == 0x9F26
    assert VISA.encode(msg.replace(header=STATIONS)) == VISA_0100


def test_visa_0110_becomes_terminal_0110_byte_for_byte():
    request = VISA.decode(VISA_0100)
    response = VISA.decode(VISA_0110)
    assert response.header == reply_header(request.header)
    assert ASCII.encode(response) == TERMINAL_0110


def test_the_switch_builds_the_visa_reply_from_the_request():
    request = VISA.decode(VISA_0100)
    reply = request.replace(mti=request.response_mti, header=reply_header(request.header),
                            pos_entry_mode=None, track2=None, emv=None,
                            auth_code="A1B2C3", response_code="00")
    assert VISA.encode(reply) == VISA_0110


def _same_but_header(a, b):
    assert a.replace(header=None) == b.replace(header=None)


@settings(max_examples=100)
@given(messages(VISA, overrides={"pos_entry_mode": digits(3, 3)}))
def test_ascii_to_visa_and_back_loses_nothing(msg):
    from_terminal = ASCII.decode(ASCII.encode(msg))
    to_visa = VISA.decode(VISA.encode(from_terminal))
    _same_but_header(to_visa, msg)
    _same_but_header(ASCII.decode(ASCII.encode(to_visa)), msg)


de48s = st.builds(build_de48, st.sampled_from("ACFHOPRTUVXZ"),
                  st.dictionaries(digits(2, 2), digits(0, 20), max_size=4))


@settings(max_examples=100)
@given(messages(MC, overrides={"additional_data": de48s}))
def test_ascii_to_mastercard_and_back_loses_nothing(msg):
    to_mc = MC.decode(MC.encode(ASCII.decode(ASCII.encode(msg))))
    assert to_mc == msg
    assert ASCII.decode(ASCII.encode(to_mc)) == msg


def test_ascii_to_iso93_and_back():
    msg = ASCII.decode(TERMINAL_0110).replace(local_date="1125", local_time="103000")
    wire = ISO93.encode(msg.replace(local_year="26"))
    assert wire.startswith(b"1110")
    back = ASCII.decode(ASCII.encode(ISO93.decode(wire)))
    assert back == msg
