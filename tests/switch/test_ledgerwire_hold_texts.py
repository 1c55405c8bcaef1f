"""``hold_offus``'s payload templates: byte for byte the ledger's canonical payload of
the events' dicts (and the stdlib's sorted, ASCII-escaped JSON), for any request values;
a value the template cannot spell gives None (the writer then encodes the dicts)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.iso8583.message import Message
from payswitch.ledger import events as ev
from payswitch.switch.ledgerwire import (
    _hold_events,
    _hold_texts,
    _refused_events,
    _text_events,
    auth_ids,
    mask,
)

# mostly plain printable ASCII, sometimes anything (quotes, backslashes, controls,
# non-ASCII), sometimes missing
_text = st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
                  st.text(max_size=8), st.none())
_amount = st.one_of(st.integers(min_value=-10**20, max_value=10**20), st.none(),
                    st.booleans())


@given(mti=_text, stan=_text, tid=_text, pan=_text, currency=_text, pcode=_text,
       link=_text, auth_code=_text, stand_in=st.booleans(), amount=_amount,
       ccy=st.sampled_from(["USD", "EUR", "JPY"]))
def test_templates_are_the_canonical_payloads(mti, stan, tid, pan, currency, pcode, link,
                                              auth_code, stand_in, amount, ccy):
    req = Message(mti, pan=pan, processing_code=pcode, amount_minor=amount, stan=stan,
                  terminal_id=tid, currency=currency)
    masked = mask(pan)
    texts = _hold_texts(req, masked, link, auth_code, stand_in, ccy)  # type: ignore[arg-type]
    events = _hold_events(auth_ids("k"), req, amount, link, auth_code,  # type: ignore[arg-type]
                          stand_in, ccy)
    plain = all(isinstance(v, str) and v.isascii() and v.isprintable()
                and '"' not in v and "\\" not in v
                for v in (mti, stan, tid, masked, currency, pcode, link, auth_code))
    assert (texts is not None) == (plain and type(amount) is int)
    if texts is None:
        return
    for e, text in zip(events, texts, strict=True):
        assert text == ev._canonical_text(e.payload)
        assert text == json.dumps(e.payload, sort_keys=True, separators=(",", ":"))


def test_hold_events_are_the_ones_of_before():
    """received and routed with the payment only; approved and held name the hold;
    a refused hold's events are its received and routed, then declined (response 96,
    reason ledger)."""
    req = Message("0100", pan="4761730000000119", processing_code="000000",
                  amount_minor=1234, stan="000123", terminal_id="TERM0001", currency="840")
    ids = auth_ids("key")
    events = _hold_events(ids, req, 1234, "visa", "123456", True, "USD")
    received, routed, approved, held = events
    assert [e.id for e in events] == [ids.received, ids.routed, ids.approved, ids.held]
    assert {e.payment_id for e in events} == {ids.payment}
    assert [e.transfer_id for e in events] == [None, None, ids.hold, ids.hold]
    assert approved.payload == {"response_code": "00", "auth_code": "123456",
                                "link": "visa", "stand_in": True}
    assert held.payload == {"amount_minor": 1234, "currency": "USD"}
    assert received.payload["pan_masked"] == "476173******0119"
    refused = _refused_events(ids, events)
    assert refused[:2] == (received, routed)
    declined = refused[2]
    assert (declined.id, declined.type, declined.payment_id, declined.transfer_id) == (
        ids.declined, "declined", ids.payment, None)
    assert declined.payload == {"response_code": "96", "reason": "ledger"}


def test_text_events_are_the_hold_events_with_their_texts():
    """What ``hold_offus`` submits when the templates apply: the same four events (ids,
    types, payment, transfer) as ``_hold_events``, each payload the template's text,
    which is the canonical payload of that event's dict."""
    req = Message("0100", pan="4761730000000119", processing_code="000000",
                  amount_minor=1234, stan="000123", terminal_id="TERM0001", currency="840")
    ids = auth_ids("key")
    dicts = _hold_events(ids, req, 1234, "visa", "123456", False, "USD")
    texts = _hold_texts(req, mask(req.pan), "visa", "123456", False, "USD")
    assert texts is not None
    events = _text_events(ids, texts)
    assert [(e.id, e.type, e.payment_id, e.transfer_id, e.occurred_at_ns) for e in events] == [
        (e.id, e.type, e.payment_id, e.transfer_id, e.occurred_at_ns) for e in dicts]
    assert [e.payload for e in events] == [ev.canonical_payload(e.payload) for e in dicts]
