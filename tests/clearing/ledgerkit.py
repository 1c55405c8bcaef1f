"""Authorizations in a real ledger, as the switch writes them, and a fake details source."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from payswitch.codecs.clearing.arn import luhn_digit
from payswitch.ledger import Account, Event, Request, Transfer, TransferFlags
from payswitch.ledger import authorization_events as auth_events
from payswitch.ledger.clearing_build import CardDetails
from payswitch.ledger.events import hmac_sha256

MAC = hmac_sha256(b"clearing-test-key-0123456789abcd")
USD = 840
NET = {"visa": 11, "mastercard": 12}
MERCHANT = 20
CODE_AUTH = 7


class Clock:
    def __init__(self, when: datetime) -> None:
        self.ns = int(when.replace(tzinfo=UTC).timestamp()) * 10**9

    def set(self, when: datetime) -> None:
        self.ns = int(when.replace(tzinfo=UTC).timestamp()) * 10**9

    def __call__(self) -> int:
        return self.ns


def setup_accounts(led) -> None:
    led.create_accounts([Account(NET["visa"], USD, 1), Account(NET["mastercard"], USD, 1),
                         Account(MERCHANT, USD, 2)])


def hold_id(pid: int) -> int:
    return 10_000_000 + pid


def authorize(led, pid: int, amount: int, *, link: str | None = "visa",
              processing_code: str = "000000", timeout_s: int = 7 * 24 * 3600) -> None:
    """An approved off-us authorization (``link``), or an on-us one (``link=None``)."""
    hold = hold_id(pid)
    approved = {"auth_code": f"A{pid:05d}"} | ({"link": link} if link else {})
    ok, ko = auth_events(payment_id=pid, hold_id=hold, approved_event_id=pid * 10 + 1,
                         held_event_id=pid * 10 + 2, declined_event_id=pid * 10 + 3,
                         amount_minor=amount, currency="USD", approved=approved)
    received = Event(pid * 10 + 4, "received", {
        "mti": "0100", "terminal_id": "TERM0001", "pan_masked": "476173******0010",
        "amount_minor": amount, "currency": "840", "processing_code": processing_code},
        payment_id=pid)
    t = Transfer(hold, NET[link or "visa"], MERCHANT, amount, USD, CODE_AUTH,
                 TransferFlags.PENDING, 0, timeout_s)
    [out] = led.submit([Request((t,), (received, *ok), ko)])
    assert out.ok, out


def decline(led, pid: int) -> None:
    led.append_events([Event(pid * 10 + 3, "declined", {"response_code": "05"},
                             payment_id=pid)])


def post(led, pid: int, amount: int = 0) -> None:
    t = Transfer(20_000_000 + pid, amount=amount, flags=TransferFlags.POST_PENDING_TRANSFER,
                 pending_id=hold_id(pid))
    assert led.create_transfers([t]) == ["created"]


def void(led, pid: int) -> None:
    t = Transfer(30_000_000 + pid, flags=TransferFlags.VOID_PENDING_TRANSFER,
                 pending_id=hold_id(pid))
    assert led.create_transfers([t]) == ["created"]


def pan_for(pid: int, prefix: str = "4761") -> str:
    body = f"{prefix}{pid % 10**11:011d}"
    return body + luhn_digit(body)


def card(pid: int, network: str = "visa") -> CardDetails:
    return CardDetails(pan=pan_for(pid, "4761" if network == "visa" else "5413"), mcc="5411",
                       merchant_name="CORNER SHOP", merchant_city="SPRINGFIELD",
                       merchant_country="USA", merchant_id="MERCHANT0000001",
                       product_id="A")


def details():
    """``--details tests.clearing.ledgerkit:details``. ``CLEARING_FAKE_DELAY_S`` makes
    it slow, so that a test can kill a build while it runs."""
    delay = float(os.environ.get("CLEARING_FAKE_DELAY_S", "0"))

    def source(rows):
        out = {}
        for r in rows:
            if delay:
                time.sleep(delay / max(len(rows), 1))
            out[r.payment_id] = card(r.payment_id, r.network)
        return out
    return source
