"""An issuer link's life as a pure state machine: an explicit transition table, no I/O.

In the manner of h11's ``_state.py``: every (state, event) pair the link can meet is
in ``TRANSITIONS``; any other pair is a bug and raises ``LinkStateError``. The
``IssuerLink`` (links.py) owns the socket and the timers and reports what happened
(connected, signed on, dropped, ...); this decides what that means, and how long
to wait before the next connect (exponential backoff, reset by a sign-on).

    DOWN --START--> CONNECTING --CONNECTED--> SIGNING_ON --SIGNON_OK--> SIGNED_ON
      ^                 |                         |                        |
      +--CONNECT_FAILED-+          DROPPED -------+------- DROPPED --------+
    STOP: DOWN, CONNECTING, SIGNING_ON -> STOPPED; SIGNED_ON -> SIGNING_OFF
    SIGNING_OFF --DROPPED--> STOPPED   (the link is closed after the 0800 DE70 002)
    STOPPED absorbs every event: the run loop returns.
"""

from __future__ import annotations

from enum import Enum


class LinkState(Enum):
    DOWN = "down"
    CONNECTING = "connecting"
    SIGNING_ON = "signing_on"
    SIGNED_ON = "signed_on"
    SIGNING_OFF = "signing_off"
    STOPPED = "stopped"


class LinkEvent(Enum):
    START = "start"  # the run loop begins a connect
    CONNECTED = "connected"
    CONNECT_FAILED = "connect_failed"
    SIGNON_OK = "signon_ok"  # 0810 DE39 00 to our 0800 DE70 001
    DROPPED = "dropped"  # the session ended: sign-on refused or timed out, peer
    # closed, read/write failure, echo unanswered, or signed off
    STOP = "stop"  # the switch is stopping


class LinkStateError(RuntimeError):
    """An event the state machine has no transition for: a bug in the driver."""


S, E = LinkState, LinkEvent
TRANSITIONS: dict[tuple[LinkState, LinkEvent], LinkState] = {
    (S.DOWN, E.START): S.CONNECTING,
    (S.DOWN, E.STOP): S.STOPPED,
    (S.CONNECTING, E.CONNECTED): S.SIGNING_ON,
    (S.CONNECTING, E.CONNECT_FAILED): S.DOWN,
    (S.CONNECTING, E.STOP): S.STOPPED,
    (S.SIGNING_ON, E.SIGNON_OK): S.SIGNED_ON,
    (S.SIGNING_ON, E.DROPPED): S.DOWN,
    (S.SIGNING_ON, E.STOP): S.STOPPED,
    (S.SIGNED_ON, E.DROPPED): S.DOWN,
    (S.SIGNED_ON, E.STOP): S.SIGNING_OFF,
    (S.SIGNING_OFF, E.DROPPED): S.STOPPED,
    (S.SIGNING_OFF, E.STOP): S.SIGNING_OFF,
    **{(S.STOPPED, e): S.STOPPED for e in LinkEvent},
}

# What the outside sees (``link_state`` gauge, the ready line, routing): three states.
PUBLIC: dict[LinkState, str] = {
    S.DOWN: "down",
    S.STOPPED: "down",
    S.CONNECTING: "connecting",
    S.SIGNING_ON: "connecting",
    S.SIGNING_OFF: "connecting",
    S.SIGNED_ON: "signed_on",
}


class LinkMachine:
    def __init__(self, reconnect_min_ms: int, reconnect_max_ms: int) -> None:
        if not 0 < reconnect_min_ms <= reconnect_max_ms:
            raise ValueError("need 0 < reconnect_min_ms <= reconnect_max_ms")
        self.state = S.DOWN
        self.min_ms = reconnect_min_ms
        self.max_ms = reconnect_max_ms
        self.backoff_ms = reconnect_min_ms

    @property
    def public(self) -> str:
        return PUBLIC[self.state]

    @property
    def carries_traffic(self) -> bool:
        return self.state is S.SIGNED_ON

    def handle(self, event: LinkEvent) -> LinkState:
        try:
            new = TRANSITIONS[self.state, event]
        except KeyError:
            raise LinkStateError(f"link in {self.state.value} cannot take {event.value}",
                                 ) from None
        if event is E.SIGNON_OK and new is S.SIGNED_ON:
            self.backoff_ms = self.min_ms  # a good session resets the backoff
        self.state = new
        return new

    def next_delay_ms(self) -> int:
        """How long to wait before the next connect; the wait after it doubles."""
        delay = self.backoff_ms
        self.backoff_ms = min(self.backoff_ms * 2, self.max_ms)
        return delay
