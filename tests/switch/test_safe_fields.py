"""safe_fields (straight-line code made from SAFE_FIELDS) gives what its definition
says, key order included: every SAFE_FIELDS value that is not None, in that order, then
the masked PAN; nothing else of the message (PAN, track 2, PIN block, EMV, MAC)."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.iso8583 import Message
from payswitch.codecs.pan import mask_pan
from payswitch.switch.journal import SAFE_FIELDS, safe_fields

_VALUE = st.one_of(st.none(), st.text(max_size=12), st.integers(-(2**70), 2**70))
_OTHERS = [f.name for f in dataclasses.fields(Message) if f.name not in SAFE_FIELDS
           and f.name not in ("mti", "pan", "other", "header", "conversion_rate")]


@given(values=st.fixed_dictionaries({name: _VALUE for name in SAFE_FIELDS if name != "mti"}),
       secret=st.fixed_dictionaries({name: st.none() | st.text(max_size=8) for name in _OTHERS}),
       pan=st.none() | st.just("") | st.from_regex(r"[0-9]{8,19}", fullmatch=True),
       mti=st.sampled_from(["0100", "0110", "0420"]))
def test_safe_fields_is_its_definition(values: dict, secret: dict, pan: str | None,
                                       mti: str) -> None:
    msg = Message(mti=mti, pan=pan, **values, **secret)
    want = {name: getattr(msg, name) for name in SAFE_FIELDS
            if getattr(msg, name) is not None}
    if pan:
        want["pan_masked"] = mask_pan(pan)
    got = safe_fields(msg)
    assert list(got.items()) == list(want.items())
    assert set(got) <= {*SAFE_FIELDS, "pan_masked"}
