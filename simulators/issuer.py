"""The issuer's decisions, without I/O: request ``Message`` in, response ``Message`` out.

``Issuer.respond(msg)`` returns the response to send, or ``None`` when the issuer
stays silent (the ``no_answer`` card, responses themselves, unknown MTIs). The
network simulator (``network.py``) wraps this in sockets, framing, delays and faults.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections.abc import Mapping

from payswitch.codecs.iso8583 import Message
from payswitch.codecs.pan import luhn_ok
from payswitch.simulators.cards import BY_PAN, NO_ANSWER, Card, parse_track2

# Fields an issuer echoes from request to response (ISO 8583:1987 practice).
ECHOED = (
    "pan", "processing_code", "amount_minor", "transmission_time", "stan", "local_time",
    "local_date", "acquirer_id", "forwarding_id", "rrn", "terminal_id", "merchant_id",
    "currency", "network_code", "original_data", "pos_entry_mode", "settlement_date",
)
AUTH_REQUESTS = {"0100", "0101", "0200", "0201"}
REVERSALS = {"0400", "0401", "0420", "0421"}
ADVICES = {"0120", "0121", "0220", "0221"}
NETWORK = {"0800", "0801"}


def response_to(msg: Message, code: str) -> Message:
    resp = Message(mti=msg.response_mti, response_code=code)
    for name in ECHOED:
        setattr(resp, name, getattr(msg, name))
    resp.header = msg.header
    return resp


class Issuer:
    def __init__(self, cards: Mapping[str, Card] | None = None, seed: int | None = None,
                 today: dt.date | None = None) -> None:
        self.cards = dict(BY_PAN if cards is None else cards)
        self._rng = random.Random(seed)
        self._today = today
        self._auth_seq = itertools.count(1)

    def today(self) -> dt.date:
        return self._today or dt.datetime.now(dt.UTC).date()

    def respond(self, msg: Message) -> Message | None:
        if not msg.is_request:
            return None
        if msg.mti in NETWORK:
            return response_to(msg, "00")
        if msg.mti in REVERSALS or msg.mti in ADVICES:
            return response_to(msg, "00")
        if msg.mti not in AUTH_REQUESTS:
            return response_to(msg, "12")  # invalid transaction
        code = self.decide(msg)
        if code is None:
            return None
        resp = response_to(msg, code)
        if code == "00":
            resp.auth_code = self.auth_code()
            if (msg.processing_code or "").startswith("31"):  # balance inquiry
                card = self.cards.get(self.pan_of(msg) or "")
                balance = card.balance_minor if card else 0
                cur = msg.currency or "840"
                # DE54: account type 00, amount type 02 (available), currency, C, 12 digits
                resp.additional_amounts = f"0002{cur}C{balance:012d}"
        return resp

    @staticmethod
    def pan_of(msg: Message) -> str | None:
        if msg.pan:
            return msg.pan
        t2 = parse_track2(msg.track2) if msg.track2 else None
        return t2[0] if t2 else None

    @staticmethod
    def expiry_of(msg: Message) -> str | None:
        if msg.expiry:
            return msg.expiry
        t2 = parse_track2(msg.track2) if msg.track2 else None
        return t2[1] if t2 else None

    def decide(self, msg: Message) -> str | None:
        """The DE39 for an authorization or financial request; None = no answer."""
        pan = self.pan_of(msg)
        if not pan or not luhn_ok(pan):
            return "14"
        card = self.cards.get(pan)
        if card is None:
            return "14"  # no such account at this issuer
        if card.outcome == NO_ANSWER:
            return None
        expiry = self.expiry_of(msg)
        today = self.today()
        if expiry is None or not expiry.isdigit() or int(expiry[2:]) not in range(1, 13):
            return "54" if card.outcome == "54" else "30"
        if int(expiry) < (today.year % 100) * 100 + today.month:
            return "54"
        if card.outcome not in ("00", "51"):
            return card.outcome
        amount = msg.amount_minor or 0
        if amount > card.balance_minor or card.outcome == "51":
            return "51"
        return "00"

    def auth_code(self) -> str:
        return f"{next(self._auth_seq) % 1_000_000:06d}"
