"""``Message.replace`` is a generated copy (issue 8: it runs on every forwarded request
and every link MAC); it must give what ``dataclasses.replace`` gives."""

import dataclasses

import pytest
from codec_strategies import messages
from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.iso8583 import get
from payswitch.codecs.iso8583.message import Message

NAMES = [f.name for f in dataclasses.fields(Message)]


@given(msg=messages(get("iso87ascii")), changed=st.lists(st.sampled_from(NAMES), unique=True),
       value=st.one_of(st.none(), st.text(max_size=4), st.binary(max_size=4)))
def test_replace_gives_what_dataclasses_replace_gives(msg, changed, value):
    msg.other[48] = "kept"
    changes = {name: value for name in changed}
    ours = msg.replace(**changes)
    theirs = dataclasses.replace(msg, **changes)
    assert ours is not msg
    assert [getattr(ours, n) for n in NAMES] == [getattr(theirs, n) for n in NAMES]
    for name in NAMES:  # the same objects, not copies (other and header are shared)
        assert getattr(ours, name) is getattr(theirs, name)
    assert [getattr(msg, n) for n in NAMES if n not in changes] == \
        [getattr(ours, n) for n in NAMES if n not in changes]


def test_replace_refuses_a_name_that_is_no_field():
    msg = Message(mti="0100", stan="000001")
    with pytest.raises(TypeError, match="tan"):
        msg.replace(tan="000002")
    assert msg.replace().stan == "000001"


@given(st.text("0123456789", min_size=4, max_size=4))
def test_request_and_response_mti_follow_the_third_digit(mti):
    """ISO 8583: an even message function (third digit) is a request; its response is
    the next odd one with the fourth digit 0 (0100 -> 0110, 0101 -> 0110, 0420 -> 0430)."""
    msg = Message(mti=mti)
    digit = "0123456789".index(mti[2])
    assert msg.is_request is (digit in (0, 2, 4, 6, 8))
    if digit < 9:
        assert msg.response_mti == mti[0] + mti[1] + "0123456789"[digit + 1] + "0"
