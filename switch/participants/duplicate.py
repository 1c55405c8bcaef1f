"""The duplicate check: the first request of a key owns it (journalled); a repeat gets
the recorded answer replayed, or waits for it while the original is in flight."""

from __future__ import annotations

from typing import Any

import trio

from payswitch.switch import pans
from payswitch.switch.errors import DuplicateStillInFlight
from payswitch.switch.messages import duplicate_key, replay, respond
from payswitch.switch.participants.base import Participant
from payswitch.switch.services import Context, Services

DUPLICATE_POLL_S = 0.05  # an original owned by another process is polled this often


class CheckDuplicate(Participant):
    """Claims the request's duplicate key. Nothing to abort: the claim is completed by
    the journal write of whatever answer the request gets."""

    async def prepare(self, ctx: Context) -> None:
        svc = self.svc
        ctx.dup_key = duplicate_key(ctx.source, ctx.request)
        fingerprint = await pans.fingerprint(svc, ctx)
        claim = await svc.store.claim(ctx.dup_key, ctx.source, ctx.request, fingerprint)
        if claim.owner:
            ctx.owner = True
            svc.in_flight_keys[ctx.dup_key] = None  # its Event: made by a waiter
            return
        svc.metrics.duplicates.inc()
        ctx.done = True
        if not claim.same:  # same key, another card / transaction: not the original's
            ctx.response = respond(ctx.request, "94")
            return
        stored = claim.response
        if stored is None:
            stored = await wait_for_original(svc, ctx.dup_key)
        ctx.response = replay(ctx.request, stored)


async def wait_for_original(svc: Services, key: str) -> dict[str, Any]:
    """The recorded answer of ``key``, waiting (``switch.duplicate_wait_ms``) while it
    is in flight; DuplicateStillInFlight (91) after that."""
    waiting = svc.in_flight_keys
    with trio.move_on_after(svc.cfg.switch.duplicate_wait_ms / 1000):
        while True:
            here = key in waiting  # in flight in this process: woken when recorded
            if here:
                event = waiting[key]
                if event is None:
                    event = waiting[key] = trio.Event()
                await event.wait()
            stored = await svc.store.outcome(key)
            if stored is not None:
                return stored
            if not here:  # owned by another process: poll
                await trio.sleep(DUPLICATE_POLL_S)
    raise DuplicateStillInFlight("original still in flight")
