"""``respond`` builds the answer by a generated copy of the request's identifying
fields (once per authorization); it must give the Message the keyword form gives:
those fields echoed, the outcome added, every other field at its default (a fresh
``other``), the request untouched."""

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.iso8583.message import Message, copier
from payswitch.switch.messages import respond

NAMES = [f.name for f in dataclasses.fields(Message)]
_text = st.one_of(st.none(), st.text("0123456789", max_size=6))
# any request: every field set or not (a value of any type: respond only copies it)
_requests = st.builds(
    lambda mti, values: Message(mti=mti, **values),
    st.sampled_from(["0100", "0101", "0200", "0400", "0420", "0800"]),
    st.fixed_dictionaries({n: st.one_of(st.none(), st.text(max_size=4), st.integers())
                           for n in NAMES if n not in ("mti", "other")}))


def _keyword_form(req, code, rrn, auth_code, additional_amounts, emv):
    return Message(
        mti=req.response_mti, pan=req.pan, processing_code=req.processing_code,
        amount_minor=req.amount_minor, transmission_time=req.transmission_time,
        stan=req.stan, local_time=req.local_time, local_date=req.local_date,
        acquirer_id=req.acquirer_id, rrn=rrn or req.rrn, auth_code=auth_code,
        response_code=code, terminal_id=req.terminal_id, merchant_id=req.merchant_id,
        currency=req.currency, additional_amounts=additional_amounts, emv=emv,
        network_code=req.network_code)


@given(req=_requests, code=st.text("0123456789", min_size=2, max_size=2),
       rrn=st.one_of(_text, st.just("")), auth_code=_text, additional_amounts=_text,
       emv=st.one_of(st.none(), st.binary(max_size=4)))
def test_respond_gives_the_keyword_forms_message(req, code, rrn, auth_code,
                                                 additional_amounts, emv):
    req.other[48] = "not echoed"
    req.header = object()
    before = [getattr(req, n) for n in NAMES]
    ours = respond(req, code, rrn=rrn, auth_code=auth_code,
                   additional_amounts=additional_amounts, emv=emv)
    theirs = _keyword_form(req, code, rrn, auth_code, additional_amounts, emv)
    assert [getattr(ours, n) for n in NAMES] == [getattr(theirs, n) for n in NAMES]
    assert ours.other == {} and ours.other is not req.other
    assert [getattr(req, n) for n in NAMES] == before


def test_a_copier_must_copy_a_field_without_default():
    try:
        copier(("stan",))
    except ValueError as e:
        assert "mti" in str(e)
    else:
        raise AssertionError("a Message without its MTI")
