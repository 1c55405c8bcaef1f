"""Frame readers over any chunking of the stream; oversize lengths refused early."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.errors import FramingError
from payswitch.codecs.framing import KINDS, FrameReader, encode_frame, reply_tpdu

TPDU = bytes.fromhex("6000120034")
payloads = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@pytest.mark.parametrize("kind", KINDS)
@given(msgs=payloads, cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_yields_the_same_frames(kind, msgs, cuts):
    stream = b"".join(encode_frame(kind, m, tpdu=TPDU) for m in msgs)
    reader = FrameReader(kind, max_frame_bytes=512)
    got = []
    for chunk in _chunks(stream, cuts):
        got.extend(reader.feed(chunk))
    assert [f.payload for f in got] == msgs
    assert reader.buffered == 0
    if kind == "tpdu":
        assert all(f.tpdu == TPDU for f in got)


@pytest.mark.parametrize("kind", KINDS)
@given(msgs=payloads, cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_frames_taken_one_at_a_time_are_the_same_frames(kind, msgs, cuts):
    stream = b"".join(encode_frame(kind, m, tpdu=TPDU) for m in msgs)
    reader = FrameReader(kind, max_frame_bytes=512)
    got = []
    for chunk in _chunks(stream, cuts):
        reader.append(chunk)
        while (frame := reader.next_frame()) is not None:
            got.append(frame.payload)
    assert got == msgs
    assert reader.buffered == 0


def test_prefix_bytes_are_as_specified():
    assert encode_frame("len2", b"AB") == b"\x00\x02AB"
    assert encode_frame("ascii4", b"AB") == b"0002AB"
    assert encode_frame("vap", b"AB") == b"\x00\x02\x00\x00AB"
    assert encode_frame("tpdu", b"AB", tpdu=TPDU) == b"\x00\x07" + TPDU + b"AB"
    assert reply_tpdu(TPDU) == bytes.fromhex("6000340012")


@pytest.mark.parametrize("kind,prefix", [("len2", b"\xff\xff"), ("ascii4", b"9999"),
                                         ("vap", b"\x10\x00\x00\x00"), ("tpdu", b"\x20\x00")])
def test_length_above_maximum_is_refused_before_buffering(kind, prefix):
    reader = FrameReader(kind, max_frame_bytes=1024)
    with pytest.raises(FramingError):
        reader.feed(prefix)


def test_garbage_prefixes_raise_only_framing_errors():
    with pytest.raises(FramingError):
        FrameReader("ascii4").feed(b"12a4xxxx")
    with pytest.raises(FramingError):
        FrameReader("vap").feed(b"\x00\x02\x01\x00AB")


def test_zero_length_keepalive_is_skipped():
    reader = FrameReader("len2")
    assert [f.payload for f in reader.feed(b"\x00\x00\x00\x02AB")] == [b"AB"]


_LINKS = [("vap", "visa"), ("len2", "mastercard"), ("ascii4", "iso87ascii"),
          ("tpdu", "iso87ascii"), ("len2", "iso93ascii")]


@pytest.mark.parametrize("kind,name", _LINKS)
@given(stans=st.lists(st.integers(0, 999999), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_framed_dialect_messages_survive_any_chunking(kind, name, stans, cuts):
    from payswitch.codecs.iso8583 import Message, get

    dialect = get(name)
    msgs = [Message(mti="0800", stan=f"{s:06d}", transmission_time="1125023000")
            for s in stans]
    if name == "visa":
        from payswitch.codecs.iso8583.visa import VisaHeader
        msgs = [m.replace(header=VisaHeader()) for m in msgs]
    stream = b"".join(encode_frame(kind, dialect.encode(m), tpdu=TPDU) for m in msgs)
    reader = FrameReader(kind)
    got = [dialect.decode(f.payload) for chunk in _chunks(stream, cuts)
           for f in reader.feed(chunk)]
    assert got == msgs
