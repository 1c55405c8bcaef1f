"""Ledger holds: an issuer's approval held in the ledger before the terminal hears it,
and the void that undoes a hold whose outcome the sender never learns."""

from __future__ import annotations

import logging

from payswitch.switch.errors import LedgerUnavailable
from payswitch.switch.logs import log
from payswitch.switch.participants.base import Participant
from payswitch.switch.services import Context, Services

LEDGER_VOID_EVENT = "ledger_void_pending"


def void_unknown_hold(svc: Services, ctx: Context) -> None:
    """The hold may have committed but the sender is told otherwise: void it (same
    deterministic ids) now in the background, and journal the need with the answer, so
    that the next start voids it too if this process dies first
    (``Store.ledger_voids_due``)."""
    assert svc.ledger is not None and ctx.dup_key is not None  # a hold was attempted
    svc.ledger.void_later(ctx.dup_key)
    ctx.events.append((LEDGER_VOID_EVENT, {"reason": "ledger outcome unknown"}, None))


class PostLedger(Participant):
    """Off-us, after the issuer answered: an approval is a pending hold network
    receivable -> merchant payable, committed before the terminal hears it; a decline
    gets its ``declined`` event (the answer stands if that write fails).

    Abort: the hold written (or whose write failed with an unknown outcome) is voided.
    The issuer's 0420 is ``Forward``'s abort."""

    async def prepare(self, ctx: Context) -> None:
        led = self.svc.ledger
        if led is None or ctx.outbound is None or ctx.response is None:
            return
        assert ctx.route is not None and ctx.dup_key is not None  # forwarded: routed, claimed
        req, link = ctx.request, ctx.route.link
        if ctx.response.response_code != "00":
            try:
                await led.declined(ctx.dup_key, req, link, ctx.response.response_code or "")
            except LedgerUnavailable as e:  # events only: the answer stands
                log("ledger_events_failed", logging.ERROR, error=str(e), stan=req.stan)
            return
        if not led.holds_money(req):
            return
        ctx.hold = "unknown"
        await led.hold_offus(ctx.dup_key, req, link, ctx.response.auth_code,
                             stand_in=ctx.stand_in is not None)
        ctx.hold = "held"

    async def abort(self, ctx: Context) -> None:
        if ctx.hold is not None and self.svc.ledger is not None:
            void_unknown_hold(self.svc, ctx)
