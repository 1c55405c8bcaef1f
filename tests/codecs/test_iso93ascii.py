"""ISO 8583:1993 ASCII: MTI, action code, DE12 and DE24 conversions; round trips."""

import contextlib

import pytest
from codec_strategies import digits, messages
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583 import Message, get
from payswitch.codecs.iso8583.iso93ascii import (
    ACTION_BY_RESPONSE,
    FUNCTION_BY_NETWORK,
    action_for_response,
    mti_to_1987,
    mti_to_1993,
    response_for_action,
)

ISO93 = get("iso93ascii")

ECHO = (b"1804" b"0230010000000000"          # bitmap: DE 7 | 11 12 | 24
        b"1125022900" b"000001" b"261125022900" b"831")
ECHO_MSG = Message(mti="0800", transmission_time="1125022900", stan="000001",
                   local_year="26", local_date="1125", local_time="022900",
                   network_code="301")

DECLINE = (b"1110" b"7030000002800000"       # bitmap: DE 2 3 4 | 11 12 | 39 | 41
           b"16" b"4111111111111111" b"000000" b"000000005000" b"000002"
           b"261125103000" b"116" b"TERM0001")
DECLINE_MSG = Message(mti="0110", pan="4111111111111111", processing_code="000000",
                      amount_minor=5000, stan="000002", local_year="26",
                      local_date="1125", local_time="103000", response_code="51",
                      terminal_id="TERM0001")


@pytest.mark.parametrize("wire,msg", [(ECHO, ECHO_MSG), (DECLINE, DECLINE_MSG)])
def test_hand_vectors(wire, msg):
    assert ISO93.decode(wire) == msg
    assert ISO93.encode(msg) == wire


@pytest.mark.parametrize("m93,m87", [("1100", "0100"), ("1110", "0110"), ("1200", "0200"),
                                     ("1210", "0210"), ("1420", "0420"), ("1430", "0430"),
                                     ("1804", "0800"), ("1814", "0810"), ("1820", "0820"),
                                     ("1805", "0801"), ("1304", "0300"), ("1604", "0600")])
def test_mti_mapping(m93, m87):
    assert mti_to_1987(m93) == m87
    assert mti_to_1993(m87) == m93


@pytest.mark.parametrize("mti", ["1800", "1810", "0100", "2100", "1x00"])
def test_mti_without_1987_twin_is_refused(mti):
    with pytest.raises(CodecError):
        mti_to_1987(mti)


@pytest.mark.parametrize("ac,mti,rc", [("000", "0110", "00"), ("100", "0110", "05"),
                                       ("116", "0110", "51"), ("117", "0210", "55"),
                                       ("101", "0110", "54"), ("911", "0110", "91"),
                                       ("904", "0110", "30"), ("909", "0110", "96"),
                                       ("800", "0810", "00"), ("400", "0430", "00")])
def test_action_code_table(ac, mti, rc):
    assert response_for_action(ac, mti) == rc
    assert action_for_response(rc, mti) == ac


def test_every_action_code_survives_decode_then_encode():
    for mti in ("0110", "0210", "0430", "0810", "0310", "0610"):
        for n in range(1000):
            ac = f"{n:03d}"
            wire = ISO93.encode(Message(mti=mti, stan="000001", response_code="00"))
            wire = wire[:-3] + ac.encode()  # DE39 is the last field
            msg = ISO93.decode(wire)
            assert ISO93.encode(msg) == wire, (mti, ac)
            assert msg.action_code in (None, ac)


def test_unknown_action_code_kept_with_nearest_meaning():
    wire = ISO93.encode(DECLINE_MSG)[:-11] + b"907TERM0001"
    msg = ISO93.decode(wire)
    assert (msg.response_code, msg.action_code) == ("91", "907")
    # a stale action code that no longer means the response code is not sent
    assert ISO93.encode(msg.replace(response_code="05")).endswith(b"100TERM0001")


def test_response_code_without_1993_code_is_a_decline():
    assert ISO93.encode(DECLINE_MSG.replace(response_code="N7")).endswith(b"100TERM0001")


@pytest.mark.parametrize("change", [{"pos_entry_mode": "051"}, {"pos_condition": "00"},
                                    {"local_year": None}, {"network_code": "301"},
                                    {"mti": "0804"}])
def test_what_1993_cannot_carry_is_refused(change):
    with pytest.raises(CodecError) as e:
        ISO93.encode(DECLINE_MSG.replace(**change))
    assert e.value.stan == "000002"


def _finish(args):
    msg, dt, net, rc_ac = args
    year, date, time = dt or (None, None, None)
    changes = {"local_year": year, "local_date": date, "local_time": time}
    if msg.mti[1] == "8":
        changes["network_code"] = net
    if rc_ac is not None:
        ac, = rc_ac
        rc = response_for_action(ac, msg.mti)
        changes["response_code"] = rc
        changes["action_code"] = None if action_for_response(rc, msg.mti) == ac else ac
    return msg.replace(**changes)


iso93_messages = st.tuples(
    messages(ISO93, skip=frozenset({"pos_entry_mode", "pos_condition", "settlement_date",
                                    "security_control", "original_data", "local_time",
                                    "local_date", "network_code", "response_code"})),
    st.none() | st.tuples(digits(2, 2), digits(4, 4), digits(6, 6)),
    st.none() | st.sampled_from(sorted(FUNCTION_BY_NETWORK)),
    st.none() | st.tuples(st.sampled_from(sorted(ACTION_BY_RESPONSE.values()))
                          | digits(3, 3)),
).map(_finish)


@settings(max_examples=150)
@given(iso93_messages)
def test_round_trip(msg):
    assert ISO93.decode(ISO93.encode(msg)) == msg


@settings(max_examples=200)
@given(st.binary(max_size=300) | st.builds(lambda b: b"1100" + b, st.binary(max_size=200)))
def test_random_bytes_raise_only_codec_error(data):
    with contextlib.suppress(CodecError):
        ISO93.decode(data)
