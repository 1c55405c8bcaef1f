"""Sending a request to the issuer link, journalled first, through the link's MUX."""

from __future__ import annotations

from payswitch.codecs.iso8583.message import Message, copy_message
from payswitch.switch import pans
from payswitch.switch.errors import LinkBusy, LinkUnavailable
from payswitch.switch.links import transmission_time
from payswitch.switch.messages import APPROVAL_CODES, KSN_DE, respond, reversal_item
from payswitch.switch.participants.base import Participant
from payswitch.switch.services import Context, Link, Services


async def exchange(svc: Services, ctx: Context, link: Link, out: Message) -> Message | None:
    """Journal ``out`` (before sending: after a crash, recovery knows the issuer may have
    it), then send it. ``ctx.sent`` says whether the issuer may have it: its outcome is
    then the switch's to undo (a 0420) if it is not answered or not told.

    For a reversal (``ctx.reversal_of``) the journal row also claims the original's one
    reversal; None, and nothing sent, when another reversal has it already."""
    ctx.outbound = out
    if ctx.pan_prot is None:
        ctx.pan_prot = await pans.protect(svc, ctx)
    if not await svc.store.append("issuer_request", out, source=ctx.source, link=link.name,
                                  dup_key=ctx.dup_key, pan=ctx.pan_prot,
                                  reversal_of=ctx.reversal_of):
        ctx.outbound = None
        return None
    ctx.sent = True
    try:
        resp = await link.request(out)
    except (LinkUnavailable, LinkBusy):
        ctx.sent = False  # refused before anything left
        raise
    ctx.issuer_response = resp
    ctx.events.append(("issuer_response", resp, link.name))
    return resp


class Forward(Participant):
    """0100/0200 off-us: to the routed link (91 when it is down, busy or silent), the
    issuer's answer to the terminal.

    Abort: what the issuer may hold is reversed by a 0420 (store-and-forward): a
    request that timed out, or an approval the terminal will not be told (a later
    participant, or the journal write of the answer, failed)."""

    async def prepare(self, ctx: Context) -> None:
        link, out = self.outbound(ctx)
        self.answer(ctx, out, await exchange(self.svc, ctx, link, out))

    def outbound(self, ctx: Context) -> tuple[Link, Message]:
        """The routed link and the request for it (no wait: ``ForwardFailover`` awaits
        ``exchange`` itself, one coroutine fewer to walk at each of its two waits)."""
        svc, req = self.svc, ctx.request
        assert ctx.route is not None  # Route ran
        link = svc.links[ctx.route.link]
        if link.state != "signed_on":
            raise LinkUnavailable(f"link {link.name} is {link.state}")
        # a copy changed by attribute: a third of replace()'s cost with nine keywords
        out = copy_message(req)
        out.mti = req.mti[:3] + "0"
        out.stan = link.next_stan()
        out.rrn = req.rrn or svc.new_rrn()
        out.transmission_time = transmission_time()
        out.acquirer_id = req.acquirer_id or svc.cfg.switch.institution_id
        out.header = None
        out.pin_block = ctx.pin_block
        out.mac = None
        out.other = {k: v for k, v in req.other.items() if k != KSN_DE}
        return link, out

    @staticmethod
    def answer(ctx: Context, out: Message, resp: Message | None) -> None:
        assert resp is not None  # None only for a reversal whose claim another has
        ctx.response = respond(ctx.request, resp.response_code or "96", rrn=out.rrn,
                               auth_code=resp.auth_code,
                               additional_amounts=resp.additional_amounts, emv=resp.emv)

    async def abort(self, ctx: Context) -> None:
        if not ctx.sent:
            return
        answered = ctx.issuer_response
        if answered is None or answered.response_code in APPROVAL_CODES:
            assert ctx.outbound is not None and ctx.route is not None  # it was sent
            ctx.saf.append(reversal_item(ctx.outbound, ctx.route.link))
