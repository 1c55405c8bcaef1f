"""Clearing: post in full every authorization hold still pending at a cut-off.

This is the ledger's own query over its own tables; callers (the switch, the demo, a
clearing job) use ``post_pending_holds`` and never write SQL against them. A hold is
found through its ``held`` event, which names the payment, so the two holds of an FX
payment are posted as one linked pair. Each post gets a ``posted`` event with
``{"clearing": true}``.

Ids are the caller's (``post_id(hold_id)``, ``event_id(hold_id)``) and must be
deterministic: a second run, or a completion that already posted the hold with the same
id scheme, then answers ``exists`` and nothing is posted twice.
"""

from __future__ import annotations

from collections.abc import Callable

from .store import Ledger, Request
from .types import Event, Transfer, TransferFlags

IdOf = Callable[[int], int]

_OPEN_HOLDS = (
    "select e.payment_id, array_agg(e.transfer_id order by e.seq) from events e"
    " join pending_transfers p on p.id = e.transfer_id"
    " join transfers t on t.id = e.transfer_id"
    " where e.type = 'held' and p.state = 'pending' and t.ts <= %s"
    " group by e.payment_id limit %s")


def _post_request(payment_id: int, hold_ids: list[int], post_id: IdOf,
                  event_id: IdOf) -> Request:
    last = len(hold_ids) - 1
    transfers = tuple(
        Transfer(post_id(h), pending_id=h, flags=TransferFlags.POST_PENDING_TRANSFER
                 | (TransferFlags.LINKED if k < last else 0))
        for k, h in enumerate(hold_ids))
    events = tuple(Event(event_id(h), "posted", {"clearing": True}, payment_id=payment_id,
                         transfer_id=h) for h in hold_ids)
    return Request(transfers, events)


def post_pending_holds(led: Ledger, *, post_id: IdOf, event_id: IdOf,
                       cutoff_ns: int | None = None, batch: int = 500) -> int:
    """Posts every pending hold created up to ``cutoff_ns`` (default: the ledger's clock
    now), ``batch`` payments per transaction. Returns the number of holds posted."""
    cutoff = cutoff_ns if cutoff_ns is not None else led.clock_ns()
    posted = 0
    while True:
        rows = led.conn.execute(_OPEN_HOLDS, (cutoff, batch)).fetchall()
        if not rows:
            return posted
        requests = [_post_request(pid.int, [t.int for t in tids], post_id, event_id)
                    for pid, tids in rows]
        outcomes = led.submit(requests)
        done = sum(len(r.transfers) for r, o in zip(requests, outcomes, strict=True) if o.ok)
        posted += done
        if done == 0:  # expired meanwhile, or refused: do not loop on them
            return posted
