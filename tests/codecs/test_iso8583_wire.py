"""wire.py against pyiso8583 itself (the independent implementation): on every
dialect's spec, the same bytes from the same fields, the same fields from the same
bytes, and on bytes it does not take plainly it steps aside (``Fallback``) rather than
give an answer of its own."""

import iso8583
import pytest
from codec_strategies import messages, mutated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583 import DIALECTS, get
from payswitch.codecs.iso8583.wire import Fallback, Wire, _latin1_tables


def _fields(dialect, msg):
    """The dialect's field strings for ``msg`` (None when the dialect refuses it)."""
    try:
        return dialect.fields_out(dialect.to_fields(msg), msg)
    except CodecError:
        return None


def _pyiso_decode(body, spec):
    try:
        return iso8583.decode(body, spec)[0]
    except Exception:  # DecodeError, or whatever hostile bytes make it raise
        return None


def _check_decode(wire, spec, body):
    """Either both decode to the same fields, or wire steps aside."""
    try:
        ours = wire.decode(body)
    except Fallback:
        return "fallback"
    assert ours == _pyiso_decode(body, spec)
    return "decoded"


@pytest.mark.parametrize("name", DIALECTS)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_same_bytes_and_fields_as_pyiso8583(name, data):
    dialect = get(name)
    wire = Wire(dialect.spec)
    msg = data.draw(messages(dialect, header=st.none()))
    fields = _fields(dialect, msg)
    if fields is None:
        return
    expected = bytes(iso8583.encode(dict(fields), dialect.spec)[0])
    assert wire.encode(dict(fields)) == expected
    assert _check_decode(wire, dialect.spec, expected) == "decoded"


@pytest.mark.parametrize("name", DIALECTS)
@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_bytes_decode_as_pyiso8583_or_fall_back(name, data):
    dialect = get(name)
    wire = Wire(dialect.spec)
    msg = data.draw(messages(dialect, header=st.none()))
    fields = _fields(dialect, msg)
    if fields is None:
        return
    body = iso8583.encode(dict(fields), dialect.spec)[0]
    _check_decode(wire, dialect.spec, mutated(data, body))


@pytest.mark.parametrize("name", DIALECTS)
def test_what_wire_leaves_to_pyiso8583(name):
    dialect = get(name)
    wire = Wire(dialect.spec)
    fields = {"t": "0800" if dialect.spec["t"]["data_enc"] != "b" else "0800",
              "11": "000001", "70": "301"}
    body = bytes(iso8583.encode(dict(fields), dialect.spec)[0])
    assert wire.decode(body) == iso8583.decode(body, dialect.spec)[0]
    with pytest.raises(Fallback):  # trailing bytes
        wire.decode(body + b"0")
    with pytest.raises(Fallback):  # cut inside the last field
        wire.decode(body[:-1])
    for bad in ({**fields, "1": "0" * 16}, {**fields, "3": "00000"}, {**fields, "11": 1},
                {**fields, "0011": "000001"}, {k: v for k, v in fields.items() if k != "t"}):
        with pytest.raises(Fallback):
            wire.encode(bad)


@pytest.mark.parametrize("encoding", ["cp500", "cp037"])
def test_ebcdic_by_translation_is_the_codec_itself(encoding):
    """EBCDIC fields are translated through Latin-1 (no Python codec call per field):
    every byte decodes, and every character encodes or fails, as the codec does."""
    dec, enc = _latin1_tables(encoding)
    for b in range(256):
        assert bytes([b]).translate(dec).decode("latin-1") == bytes([b]).decode(encoding)
    for c in map(chr, range(256)):
        assert c.encode("latin-1").translate(enc) == c.encode(encoding)
    for c in ("\u20ac", "\u0100", "\U0001f600"):  # outside the code: refused by both
        with pytest.raises(UnicodeEncodeError):
            c.encode(encoding)
        with pytest.raises(UnicodeEncodeError):
            c.encode("latin-1")


def test_codes_that_are_not_a_latin1_permutation_keep_their_codec():
    assert _latin1_tables("ascii") is None and _latin1_tables("b") is None
    assert _latin1_tables("utf-8") is None and _latin1_tables("no-such-codec") is None
