"""The link state machine without sockets: its table, its backoff, and random event
sequences (hypothesis) against a small model written from the issue's words."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payswitch.switch.linkstate import (
    PUBLIC,
    TRANSITIONS,
    LinkEvent,
    LinkMachine,
    LinkState,
    LinkStateError,
)

S, E = LinkState, LinkEvent


def run(*events: LinkEvent) -> LinkMachine:
    m = LinkMachine(100, 800)
    for e in events:
        m.handle(e)
    return m


def test_a_normal_life():
    m = run(E.START, E.CONNECTED)
    assert (m.state, m.public, m.carries_traffic) == (S.SIGNING_ON, "connecting", False)
    m.handle(E.SIGNON_OK)
    assert (m.state, m.public, m.carries_traffic) == (S.SIGNED_ON, "signed_on", True)
    m.handle(E.STOP)
    assert (m.state, m.public, m.carries_traffic) == (S.SIGNING_OFF, "connecting", False)
    m.handle(E.DROPPED)
    assert (m.state, m.public) == (S.STOPPED, "down")


def test_a_drop_goes_down_and_the_loop_reconnects():
    m = run(E.START, E.CONNECTED, E.SIGNON_OK, E.DROPPED)
    assert m.state is S.DOWN
    assert m.handle(E.START) is S.CONNECTING


@pytest.mark.parametrize("at", [[], [E.START], [E.START, E.CONNECTED]])
def test_stop_before_sign_on_stops_without_signing_off(at):
    assert run(*at, E.STOP).state is S.STOPPED


def test_stopped_absorbs_whatever_the_session_still_reports():
    m = run(E.START, E.CONNECTED, E.STOP)
    for e in (E.SIGNON_OK, E.DROPPED, E.CONNECTED, E.START):
        assert m.handle(e) is S.STOPPED
    assert not m.carries_traffic


@pytest.mark.parametrize(("state", "event"), [
    (s, e) for s in LinkState for e in LinkEvent if (s, e) not in TRANSITIONS])
def test_every_pair_not_in_the_table_is_refused(state, event):
    m = LinkMachine(100, 800)
    m.state = state
    with pytest.raises(LinkStateError):
        m.handle(event)
    assert m.state is state


def test_backoff_doubles_to_the_cap_and_a_sign_on_resets_it():
    m = run(E.START, E.CONNECT_FAILED)
    assert [m.next_delay_ms() for _ in range(5)] == [100, 200, 400, 800, 800]
    m.handle(E.START)
    m.handle(E.CONNECTED)
    m.handle(E.SIGNON_OK)
    m.handle(E.DROPPED)
    assert m.next_delay_ms() == 100


def test_every_state_has_a_public_name():
    assert set(PUBLIC) == set(LinkState)
    assert set(PUBLIC.values()) == {"down", "connecting", "signed_on"}


@given(st.lists(st.sampled_from(list(LinkEvent)), max_size=40))
def test_random_events_match_the_model(events):
    """Model: traffic only after a sign-on on the current connection and before a
    stop; a stop is final."""
    m = LinkMachine(100, 800)
    connected = signed = stopped = False
    for e in events:
        try:
            m.handle(e)
        except LinkStateError:
            continue
        if e is E.STOP:
            stopped, signed = True, False
        elif e is E.CONNECTED:
            connected = not stopped
        elif e is E.SIGNON_OK:
            signed = connected and not stopped
        elif e in (E.DROPPED, E.CONNECT_FAILED):
            connected = signed = False
        assert m.carries_traffic == signed
        assert (m.state is S.STOPPED) == (stopped and m.state is not S.SIGNING_OFF)
        if stopped:
            assert m.state in (S.STOPPED, S.SIGNING_OFF)
