"""Clearing through the ledger's API (ledger.post_pending_holds), on real PostgreSQL:
every hold pending at the cut-off is posted (an FX pair as a linked pair), with a
`posted` event; later holds and voided holds are left alone; a second run posts nothing;
the ledger still verifies clean."""

from __future__ import annotations

import time

import psycopg

from payswitch.ledger import post_pending_holds, verify
from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.store import Ledger, Request
from payswitch.ledger.types import Account, Event, Transfer
from payswitch.ledger.types import TransferFlags as F

MAC = hmac_sha256(bytes(range(32)))
USD = 840
RECEIVABLE, PAYABLE = 1, 2


def post_id(hold: int) -> int:
    return 10_000 + hold


def event_id(hold: int) -> int:
    return 20_000 + hold


def hold(led: Ledger, payment: int, holds: list[int], amount: int = 1_000) -> None:
    last = len(holds) - 1
    transfers = tuple(Transfer(h, RECEIVABLE, PAYABLE, amount, USD, 2,
                               F.PENDING | (F.LINKED if k < last else 0), timeout_s=3600)
                      for k, h in enumerate(holds))
    events = tuple(Event(500 + h, "held", {"amount_minor": amount, "currency": "USD"},
                         payment_id=payment, transfer_id=h) for h in holds)
    out = led.submit([Request(transfers, (Event(400 + payment, "approved",
                                                 {"response_code": "00"}, payment_id=payment,
                                                 transfer_id=holds[0]), *events))])
    assert out[0].ok, out[0].results


def test_post_pending_holds_posts_up_to_the_cutoff_once(pg_dsn):
    clock = [time.time_ns()]
    with Ledger(pg_dsn, migrate=True, mac=MAC, clock_ns=lambda: clock[0]) as led:
        led.create_accounts([Account(RECEIVABLE, USD, 3), Account(PAYABLE, USD, 4)])
        hold(led, 1, [101])
        hold(led, 2, [102, 103])  # an FX payment: two holds, one linked pair
        hold(led, 3, [104])
        led.create_transfers([Transfer(204, flags=F.VOID_PENDING_TRANSFER, pending_id=104)])
        cutoff = clock[0] = clock[0] + 1_000_000_000
        clock[0] += 1_000_000_000
        hold(led, 5, [105])  # after the cut-off

        assert post_pending_holds(led, post_id=post_id, event_id=event_id,
                                  cutoff_ns=cutoff) == 3
        assert post_pending_holds(led, post_id=post_id, event_id=event_id,
                                  cutoff_ns=cutoff) == 0

        states = {h: led.pending_state(h) for h in (101, 102, 103, 104, 105)}
        assert states == {101: "posted", 102: "posted", 103: "posted", 104: "voided",
                          105: "pending"}
        posts = {t.id: t for t in led.lookup_transfers([10_102, 10_103])}
        assert posts[10_102].flags & F.LINKED and not posts[10_103].flags & F.LINKED
        cleared = [e for e in led.payment_events(2) if e.type == "posted"]
        assert [(e.id, e.transfer_id, e.payload) for e in cleared] == [  # canonical JSON
            (20_102, 102, '{"clearing":true}'), (20_103, 103, '{"clearing":true}')]
        assert led.lookup_accounts([PAYABLE])[0].credits_posted == 3_000

        # no cut-off: up to the ledger's clock now, so the later hold too
        assert post_pending_holds(led, post_id=post_id, event_id=event_id) == 1
        assert led.pending_state(105) == "posted"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        report = verify(conn, MAC)
    assert report.ok, report
