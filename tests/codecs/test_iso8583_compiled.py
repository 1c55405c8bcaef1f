"""The compiled plain case (compiled.py) against each dialect's general path (wire.py,
then pyiso8583, then the dialect's own checks): on generated messages, on messages
with one hostile value and on mutated bytes, it gives the same bytes and the same
Message, or steps aside so that the general path answers (or refuses) as it did."""

from __future__ import annotations

import dataclasses

import iso8583
import pytest
from codec_strategies import messages, mutated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583 import DIALECTS, get
from payswitch.codecs.iso8583.message import FIELDS, Message

COMPILED = [n for n in DIALECTS if get(n).compiled]
NAMES = [name for _, name, _ in FIELDS] + ["mti", "mac"]
HOSTILE = st.one_of(st.text(st.characters(codec="utf-8"), max_size=30),
                    st.text("0123456789=D \u0660\u00b2", max_size=40),
                    st.integers(-2, 10**13), st.binary(max_size=20),
                    st.builds(bytearray, st.binary(max_size=20)), st.none())
SETTINGS = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def _general_encode(dialect, msg):
    try:
        return dialect._encode_body(msg)
    except CodecError:
        return None


def _general_decode(dialect, body):
    try:
        return dialect._decode_body(body)
    except CodecError:
        return None


def _check_encode(dialect, msg):
    """Compiled bytes, when it gives any, are the general path's. Returns them."""
    try:
        ours = dialect._compiled[1](msg)
    except Exception:
        return None
    assert ours == _general_encode(dialect, msg)
    return ours


def _check_decode(dialect, body):
    try:
        ours = dialect._compiled[0](body)
    except Exception:
        return None
    assert ours == _general_decode(dialect, body)
    return ours


@pytest.mark.parametrize("name", COMPILED)
@SETTINGS
@given(data=st.data())
def test_plain_messages_take_the_compiled_path_with_the_same_bytes(name, data):
    dialect = get(name)
    msg = data.draw(messages(dialect, header=st.none()))
    msg.other = {}  # the compiled encoder leaves Message.other to the general path
    expected = _general_encode(dialect, msg)
    if expected is None:  # the dialect refuses it (Visa DE22 not 3 digits, DE48...)
        return
    # independent reader: pyiso8583 takes the bytes back to the same MTI
    assert iso8583.decode(expected, dialect.spec)[0]["t"]
    assert _check_encode(dialect, msg) == expected
    assert _check_decode(dialect, expected) == dialect._decode_body(expected)


@pytest.mark.parametrize("name", COMPILED)
@SETTINGS
@given(data=st.data())
def test_a_hostile_value_is_refused_or_encoded_as_the_general_path_does(name, data):
    dialect = get(name)
    msg = data.draw(messages(dialect, header=st.none()))
    msg.other = {}
    setattr(msg, data.draw(st.sampled_from(NAMES)), data.draw(HOSTILE))
    body = _check_encode(dialect, msg)
    if body is not None:
        _check_decode(dialect, body)


@pytest.mark.parametrize("name", COMPILED)
@SETTINGS
@given(data=st.data())
def test_mutated_bytes_decode_as_the_general_path_or_step_aside(name, data):
    dialect = get(name)
    msg = data.draw(messages(dialect, header=st.none()))
    body = _general_encode(dialect, msg)
    if body is None:
        return
    _check_decode(dialect, mutated(data, body))


AUTH = Message(
    mti="0200", pan="4761730000000011", processing_code="011000", amount_minor=2000,
    transmission_time="1128221518", stan="140892", local_time="221518",
    local_date="1128", expiry="2911", mcc="6011", pos_entry_mode="021",
    acquirer_id="123456", track2="4761730000000011=29112010000000000",
    rrn="533002381274", terminal_id="DEMO0001", merchant_id="DEMOMERCHANT001",
    merchant_name="PAYSWITCH DEMO ATM        SPRINGFIELD US", currency="840",
    pin_block=bytes.fromhex("4A58B791DF6AF1D8"), mac=bytes(8))


@pytest.mark.parametrize("name", COMPILED)
def test_an_authorization_and_its_answer_take_the_compiled_path(name):
    """The messages of every authorization: a regression here costs the switch
    ~20 µs an authorization, so it is checked, not just measured."""
    dialect = get(name)
    answer = dataclasses.replace(AUTH, mti="0210", response_code="00", auth_code="123456",
                                 pin_block=None, track2=None)
    for msg in (AUTH, answer):
        body = _check_encode(dialect, msg)
        assert body is not None
        assert _check_decode(dialect, body) == msg


@pytest.mark.parametrize("name", COMPILED)
def test_what_the_compiled_path_leaves_to_the_general_one(name):
    dialect = get(name)
    body = dialect._encode_body(AUTH)
    for bad in (body + b"0", body[:-1], body[:3]):  # trailing bytes, cut field, no bitmap
        assert _check_decode(dialect, bad) is None
        with pytest.raises(CodecError):
            dialect.decode(bad)
    # Message.other goes the general way
    assert _check_encode(dialect, dataclasses.replace(AUTH, other={62: "0" * 20})) is None
    with pytest.raises(CodecError):  # and a refusal is still the general path's
        dialect.encode(dataclasses.replace(AUTH, stan="12345\u0661"))
