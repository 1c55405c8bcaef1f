"""Reversals (0400 online, 0420 advice): found and matched to their original, sent or
queued once per original, and the original's hold voided."""

from __future__ import annotations

import logging

from payswitch.codecs.pan import mask_pan
from payswitch.switch import pans
from payswitch.switch.errors import (
    IssuerTimeout,
    LedgerUnavailable,
    LinkBusy,
    LinkUnavailable,
    OriginalNotFound,
    ReversalAmountMismatch,
    ReversalCardMismatch,
    response_code_for,
)
from payswitch.switch.journal import Original, message_from_safe
from payswitch.switch.links import transmission_time
from payswitch.switch.logs import log
from payswitch.switch.messages import (
    APPROVAL_CODES,
    original_data,
    pan_of,
    respond,
    reversal_item,
)
from payswitch.switch.participants.base import Participant
from payswitch.switch.participants.duplicate import wait_for_original
from payswitch.switch.participants.forward import exchange
from payswitch.switch.services import Context

ORIGINAL_MTIS = ("0100", "0101", "0200", "0201")


class LocateOriginal(Participant):
    """The transaction a reversal (or an on-us completion) refers to: DE90 when present,
    else same STAN/DE7 (25 when none). An original still in flight is waited for
    (bounded, as a duplicate waits: 91 after duplicate_wait_ms): answering 00 before
    its outcome is known would let an approval that comes later stand, unreversed."""

    async def prepare(self, ctx: Context) -> None:
        svc, req = self.svc, ctx.request
        od = req.original_data or ""
        stan, when = (od[4:10], od[10:20]) if len(od) >= 20 else (req.stan,
                                                                   req.transmission_time)
        orig = await svc.store.find_original(ctx.source, stan or "", when or "", ORIGINAL_MTIS)
        if orig is None:
            raise OriginalNotFound("no original for this reversal")
        if orig.response is None:
            await wait_for_original(svc, orig.dup_key)
            orig = await svc.store.find_original(ctx.source, stan or "", when or "",
                                                 ORIGINAL_MTIS)
        ctx.original = orig


class MatchOriginal(Participant):
    """A reversal is the original's, not what the terminal put in it: its DE4 must be
    the original's amount (13 otherwise) and its card the original's (25 otherwise);
    refused, nothing is reversed or voided. The card is compared with the original's
    PAN decrypted from the journal (HSM); without a stored PAN (no [hsm], or an on-us
    original) with the original's masked PAN. A reversal without DE2 goes out, and is
    stored for SAF, with the original's PAN."""

    async def prepare(self, ctx: Context) -> None:
        svc, req, orig = self.svc, ctx.request, ctx.original
        assert orig is not None  # LocateOriginal
        received = orig.request or orig.issuer_request or {}
        amount = received.get("amount_minor")
        if req.amount_minor is not None and amount is not None and req.amount_minor != amount:
            raise ReversalAmountMismatch("reversal amount is not its original's")
        theirs = pan_of(req)
        pan = await pans.stored(svc, orig.pan_enc, orig.dup_key, stan=req.stan)
        if pan is not None:
            if theirs and theirs != pan:
                raise ReversalCardMismatch("reversal card is not its original's")
            ctx.original_pan = pan
            if ctx.pan_prot is None:  # stored with the reversal's rows, for its 0420
                ctx.pan_prot = await pans.protect(svc, ctx, pan)
            return
        masked = received.get("pan_masked")
        if theirs and masked and mask_pan(theirs) != masked:
            raise ReversalCardMismatch("reversal card is not its original's")


def needs_reversal(orig: Original) -> bool:
    """Only an approval the issuer gave needs reversing: a 91 (timeout) was reversed by
    the switch already, and a decline holds nothing."""
    return (orig.issuer_request is not None and orig.response is not None
            and orig.response.get("response_code") in APPROVAL_CODES)


class ForwardReversal(Participant):
    """0400: the original's one reversal, sent to its link. A link that is down or busy
    gets it by store-and-forward (00 to the terminal); a 0400 the issuer does not answer
    is decided all the same: 91 to the terminal, its 0420 queued, the hold voided by
    ``VoidLedger``. Nothing to abort: a reversal is not itself reversed."""

    async def prepare(self, ctx: Context) -> None:
        svc, orig = self.svc, ctx.original
        assert orig is not None  # LocateOriginal
        if not needs_reversal(orig):
            ctx.response = respond(ctx.request, "00")
            return
        assert orig.issuer_request is not None and orig.link is not None  # it was sent
        first = message_from_safe(orig.issuer_request)
        link = svc.links[orig.link]
        ctx.reversal_of = orig.dup_key  # one reversal per original (switch_reversal)
        if link.state != "signed_on":
            # Not lost: the reversal goes out by store-and-forward when the link is back.
            ctx.saf.append(reversal_item(first, link.name))
            ctx.response = respond(ctx.request, "00", rrn=first.rrn)
            return
        out = first.replace(mti="0400", pan=ctx.original_pan or ctx.request.pan,
                            stan=link.next_stan(), transmission_time=transmission_time(),
                            original_data=original_data(first), auth_code=None,
                            response_code=None, additional_amounts=None)
        try:
            resp = await exchange(svc, ctx, link, out)
        except (LinkUnavailable, LinkBusy):
            # Nothing sent, but this request holds the original's one reversal: it must
            # not be lost, so it goes by store-and-forward, as when the link is down.
            ctx.saf.append(reversal_item(first, link.name))
            ctx.response = respond(ctx.request, "00", rrn=first.rrn)
            return
        except IssuerTimeout as e:
            # Sent, outcome unknown: the 0420 (DE90 = the original) is queued, so the
            # reversal is decided and the switch owns its delivery. The terminal is
            # told 91 (issuer did not answer), and the path goes on: VoidLedger.
            ctx.saf.append(reversal_item(out, link.name))
            ctx.error = f"{type(e).__name__}: {e}"
            ctx.response = respond(ctx.request, response_code_for(e), rrn=first.rrn)
            return
        code = "00" if resp is None else resp.response_code or "96"  # None: reversed already
        ctx.response = respond(ctx.request, code, rrn=first.rrn)


class StoreReversal(Participant):
    """A terminal's 0420: queued durably (with the answer, one transaction; only if it
    is the original's first reversal), then acknowledged 00."""

    async def prepare(self, ctx: Context) -> None:
        orig = ctx.original
        assert orig is not None  # LocateOriginal
        if needs_reversal(orig):
            assert orig.issuer_request is not None and orig.link is not None  # it was sent
            first = message_from_safe(orig.issuer_request)
            ctx.reversal_of = orig.dup_key
            ctx.saf.append(reversal_item(first, orig.link))
        ctx.response = respond(ctx.request, "00")


class VoidLedger(Participant):
    """Void the pending hold of the reversed original (on-us or off-us). A failed void is
    retried in the background (same ids); the reversal's answer stands."""

    async def prepare(self, ctx: Context) -> None:
        led, orig = self.svc.ledger, ctx.original
        if led is None or orig is None or (orig.response or {}).get("response_code") != "00":
            return
        try:
            result = await led.void(orig.dup_key, "reversal")
        except LedgerUnavailable as e:
            log("ledger_void_failed", logging.ERROR, error=str(e), retry="in background")
            led.void_later(orig.dup_key)
            return
        log("ledger_voided", result=result, stan=ctx.request.stan)
