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
