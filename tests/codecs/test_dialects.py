"""What every dialect promises: round trip, only CodecError on bad bytes, and errors
that carry MTI and STAN when readable but never a full PAN."""

import contextlib

import iso8583
import pytest
from codec_strategies import digits, messages
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583 import DIALECTS, Message, get
from payswitch.codecs.iso8583.visa import VisaHeader

ASCII = get("iso87ascii")
PAN = "4761739001010010123"  # 19 digits
WIRE_MTI = {"iso87ascii": "0100", "visa": "0100", "mastercard": "0100", "iso93ascii": "1100",
            "iso87binbitmap": "0100"}


def _raw(name, fields):
    """Bytes for ``fields`` laid out by the dialect's spec, bypassing its checks."""
    dialect = get(name)
    body = bytes(iso8583.encode(dict(fields), dialect.spec)[0])
    if name == "visa":
        return VisaHeader().to_bytes(22 + len(body)) + body
    return body


def _assert_no_pan(err):
    for text in (str(err), repr(err), err.reason, *map(str, err.args)):
        assert PAN not in text
        assert PAN[:12] not in text


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("bad", [{"3": "00A000"}, {"2": PAN[:-1] + "A"}, {"4": "0000000001B0"}])
def test_bad_content_error_carries_mti_stan_and_no_pan(name, bad):
    fields = {"t": WIRE_MTI[name], "2": PAN, "3": "000000", "4": "000000001000",
              "11": "004711", "41": "TERM0001", **bad}
    with pytest.raises(CodecError) as e:
        get(name).decode(_raw(name, fields))
    assert (e.value.mti, e.value.stan) == ("0100", "004711")
    assert e.value.field == next(iter(bad))
    _assert_no_pan(e.value)


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("cut", [1, 3, 5])
def test_truncated_message_error_carries_mti_stan_and_no_pan(name, cut):
    fields = {"t": WIRE_MTI[name], "2": PAN, "3": "000000", "11": "004711",
              "41": "TERM0001"}
    wire = _raw(name, fields)[:-cut]
    if name == "visa":  # keep H4 right so that the body is what is short
        wire = wire[:3] + len(wire).to_bytes(2, "big") + wire[5:]
    with pytest.raises(CodecError) as e:
        get(name).decode(wire)
    assert (e.value.mti, e.value.stan, e.value.field) == ("0100", "004711", "41")
    _assert_no_pan(e.value)


@pytest.mark.parametrize("name", DIALECTS)
def test_encode_error_has_no_pan(name):
    msg = Message(mti="0100", pan=PAN + "12", stan="004711")  # 21 digits: too long
    with pytest.raises(CodecError) as e:
        get(name).encode(msg)
    assert e.value.stan == "004711"
    _assert_no_pan(e.value)


def test_message_repr_masks_pan():
    text = repr(Message(mti="0100", pan=PAN, track2=PAN + "=2512"))
    assert PAN not in text and "476173*********0123" in text


@pytest.mark.parametrize("name", DIALECTS)
def test_non_bytes_input_is_a_codec_error(name):
    with pytest.raises(CodecError):
        get(name).decode("0100")


# -- iso87ascii (the contract's own dialect) ------------------------------------------
def test_iso87ascii_hand_vector_with_secondary_bitmap():
    msg = Message(mti="0200", pan="4761739001010010", processing_code="000000",
                  amount_minor=10000, stan="004711", network_code="301")
    wire = (b"0200" b"F020000000000000" b"0400000000000000"  # 1 2 3 4 | 11 || 70
            b"16" b"4761739001010010" b"000000" b"000000010000" b"004711" b"301")
    assert ASCII.decode(wire) == msg
    assert ASCII.encode(msg) == wire


@settings(max_examples=150)
@given(messages(ASCII))
def test_iso87ascii_round_trip(msg):
    assert ASCII.decode(ASCII.encode(msg)) == msg


@pytest.mark.parametrize("name", DIALECTS)
@settings(max_examples=100)
@given(data=st.binary(max_size=200), mti_digits=digits(4, 4))
def test_bytes_behind_a_plausible_mti_raise_only_codec_error(name, data, mti_digits):
    wire = mti_digits.encode() + data
    if name == "mastercard":
        wire = mti_digits.encode("cp500") + data
    if name == "visa":
        body = bytes.fromhex(mti_digits) + data
        wire = VisaHeader().to_bytes(22 + len(body)) + body
    with contextlib.suppress(CodecError):
        get(name).decode(wire)


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("bad", [{"pan": "47617390010100X0"}, {"emv": "9F2701"},
                                 {"amount_minor": "100"}, {"processing_code": 0}])
def test_encode_refuses_what_the_peer_would_refuse(name, bad):
    with pytest.raises(CodecError) as e:
        get(name).encode(Message(mti="0100", stan="004711", **bad))
    assert e.value.stan == "004711"
    assert "47617390010100" not in str(e.value)
