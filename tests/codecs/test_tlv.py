"""BER-TLV for DE55: hand-written vectors, errors, round trips, hostile bytes."""

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.codecs.errors import CodecError
from payswitch.codecs.tlv import Tlv, decode_tlv, encode_tlv, find, get_tag, set_tag

ARQC = bytes.fromhex("1122334455667788")


def test_multi_byte_tags():
    assert decode_tlv(bytes.fromhex("9F2608" "1122334455667788")) == [Tlv(0x9F26, ARQC)]
    assert decode_tlv(bytes.fromhex("DF8101" "02" "ABCD")) == [Tlv(0xDF8101, b"\xab\xcd")]
    assert encode_tlv([Tlv(0xDF8101, b"\xab\xcd")]).hex().upper() == "DF810102ABCD"


@pytest.mark.parametrize("n,prefix", [(127, "7F"), (128, "8180"), (255, "81FF"),
                                      (256, "820100"), (1000, "8203E8")])
def test_long_lengths(n, prefix):
    wire = bytes.fromhex("5F20" + prefix) + b"x" * n
    assert decode_tlv(wire) == [Tlv(0x5F20, b"x" * n)]
    assert encode_tlv([Tlv(0x5F20, b"x" * n)]) == wire


def test_nested_templates_and_unknown_tags_in_order():
    wire = bytes.fromhex(
        "70" "0B"                       # READ RECORD template, 11 bytes
        "77" "09"                       # response template, 9 bytes
        "9F2701" "80"                   # CID
        "9F3602" "0012"                 # ATC
        "DF7F01" "AA"                   # unknown proprietary tag
        "5F2A02" "0978"                 # transaction currency
        "C101" "FF"                     # unknown context-specific tag
    )
    items = decode_tlv(wire)
    assert items == [
        Tlv(0x70, (Tlv(0x77, (Tlv(0x9F27, b"\x80"), Tlv(0x9F36, b"\x00\x12"))),)),
        Tlv(0xDF7F, b"\xaa"), Tlv(0x5F2A, b"\x09\x78"), Tlv(0xC1, b"\xff"),
    ]
    assert encode_tlv(items) == wire
    assert get_tag(wire, "9F36") == b"\x00\x12"
    assert find(items, 0x77).constructed


def test_set_tag_replaces_in_place_or_appends():
    items = decode_tlv(bytes.fromhex("77089F2701809F3601" "00" "5A0141"))
    out = set_tag(items, 0x9F36, b"\x00\x13")
    assert encode_tlv(out).hex().upper() == "77099F2701809F360200135A0141"
    out = set_tag(out, "9F26", ARQC)
    assert encode_tlv(out).hex().upper().endswith("9F26081122334455667788")
    assert get_tag(out, 0x9F26) == ARQC
    assert get_tag(out, 0x9F10) is None


@pytest.mark.parametrize("hexdata", [
    "9F", "9F26", "9F2608112233", "9F26081122334455667788" "9F27",
    "5A85" "0000000001", "5A80", "5A82" "01", "70" "05" "9F2608" "11",
    "9FFFFFFF0100", "81",
])
def test_bad_data_is_a_clear_codec_error(hexdata):
    with pytest.raises(CodecError):
        decode_tlv(bytes.fromhex(hexdata))


def test_error_text_names_the_tag_not_the_value():
    pan = "4761739001010010"
    with pytest.raises(CodecError) as e:
        decode_tlv(bytes.fromhex("5A09" + pan))
    assert "5A" in str(e.value) and pan not in str(e.value)


def test_deep_nesting_is_refused():
    wire = b""
    for _ in range(40):
        wire = b"\x70" + bytes((len(wire),)) + wire
    with pytest.raises(CodecError):
        decode_tlv(wire)


def test_repr_does_not_show_values():
    assert "4761" not in repr(Tlv(0x5A, bytes.fromhex("4761739001010010")))


# -- properties ----------------------------------------------------------------------
def _tag(first: int, rest: list[int], last: int | None) -> int:
    raw = bytes([first, *rest] + ([last] if last is not None else []))
    return int.from_bytes(raw, "big")


single = st.integers(1, 255).filter(lambda b: b & 0x1F != 0x1F)
multi_first = st.sampled_from([0x1F, 0x5F, 0x9F, 0xDF, 0x3F, 0x7F, 0xBF, 0xFF])
tags = st.one_of(
    single.map(lambda b: b),
    st.builds(_tag, multi_first, st.lists(st.integers(0x81, 0xFF), max_size=2),
              st.integers(0x01, 0x7F)),
)
primitive_tags = tags.filter(lambda t: not t.to_bytes(4, "big").lstrip(b"\0")[0] & 0x20)
constructed_tags = tags.filter(lambda t: t.to_bytes(4, "big").lstrip(b"\0")[0] & 0x20)
leaves = st.builds(Tlv, primitive_tags, st.binary(max_size=300))
trees = st.recursive(
    leaves,
    lambda kids: st.builds(lambda t, c: Tlv(t, tuple(c)), constructed_tags,
                           st.lists(kids, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=150)
@given(st.lists(trees, max_size=6))
def test_round_trip(items):
    wire = encode_tlv(items)
    assert decode_tlv(wire) == items
    assert encode_tlv(decode_tlv(wire)) == wire


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_codec_error(data):
    with contextlib.suppress(CodecError):
        items = decode_tlv(data)
        assert decode_tlv(encode_tlv(items)) == items
