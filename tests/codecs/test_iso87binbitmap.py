"""iso87binbitmap: ISO 8583:1987, binary bitmap, ASCII fields (iso8583sim's and the npm
iso_8583 package's default). Checked against pyiso8583 with a spec assembled from the
library's own tables, not ours: its ``default_ascii`` with only the bitmaps taken from
its ``default`` (binary) spec."""

import contextlib
import copy

import iso8583
from codec_strategies import messages
from hypothesis import given, settings
from hypothesis import strategies as st
from iso8583.specs import default, default_ascii

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583 import Message, get

BIN = get("iso87binbitmap")
ASCII = get("iso87ascii")

REFERENCE = copy.deepcopy(default_ascii)
REFERENCE["p"] = copy.deepcopy(default["p"])
REFERENCE["1"] = copy.deepcopy(default["1"])


def test_hand_vector_bitmap_is_eight_raw_bytes():
    msg = Message(mti="0800", transmission_time="1128120000", stan="004711",
                  network_code="301")
    wire = (b"0800" b"\x82\x20\x00\x00\x00\x00\x00\x00" b"\x04\x00\x00\x00\x00\x00\x00\x00"
            b"1128120000" b"004711" b"301")  # bits 1 7 11 | 70
    assert BIN.encode(msg) == wire
    assert BIN.decode(wire) == msg
    ref, _ = iso8583.decode(wire, REFERENCE)
    assert (ref["t"], ref["7"], ref["11"], ref["70"]) == ("0800", "1128120000", "004711", "301")


@settings(max_examples=150)
@given(messages(BIN))
def test_round_trip(msg):
    assert BIN.decode(BIN.encode(msg)) == msg


# DE55 stays within the reference's LLL 510 hex characters (ours allows 999)
@settings(max_examples=150)
@given(messages(BIN, overrides={"emv": st.binary(min_size=1, max_size=255)}))
def test_same_bytes_as_pyiso8583_with_its_own_binary_bitmap(msg):
    fields, _ = iso8583.decode(ASCII.encode(msg), default_ascii)  # the same field strings
    for bitmap in ("p", "1"):
        fields.pop(bitmap, None)
    expected, _ = iso8583.encode(fields, REFERENCE)
    assert BIN.encode(msg) == bytes(expected)


@settings(max_examples=200)
@given(st.binary(max_size=300), st.sampled_from([b"0100", b"0200", b"0800", b"0400"]))
def test_random_bytes_raise_only_codec_error(data, mti):
    for wire in (data, mti + data):
        with contextlib.suppress(CodecError):
            BIN.decode(wire)


def test_bad_field_error_carries_mti_and_stan():
    fields = {"t": "0200", "3": "00A000", "11": "004711", "41": "TERM0001"}
    wire, _ = iso8583.encode(fields, REFERENCE)
    try:
        BIN.decode(bytes(wire))
    except CodecError as e:
        assert (e.mti, e.stan, e.field) == ("0200", "004711", "3")
    else:
        raise AssertionError("decoded a processing code with a letter in it")
