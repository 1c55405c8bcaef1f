"""Advices (0120/0220) for an off-us card: stored, acknowledged, forwarded by SAF."""

from __future__ import annotations

from payswitch.switch.journal import SafItem, safe_fields
from payswitch.switch.messages import respond
from payswitch.switch.participants.base import Participant
from payswitch.switch.services import Context


class StoreAdvice(Participant):
    """0120/0220: queued for the routed link (safe fields only: see README), with the
    answer in one transaction, then acknowledged 00."""

    async def prepare(self, ctx: Context) -> None:
        assert ctx.route is not None
        fields = safe_fields(ctx.request)
        for name in ("pan_masked", "mti", "stan", "transmission_time"):
            fields.pop(name, None)
        fields["acquirer_id"] = ctx.request.acquirer_id or self.svc.cfg.switch.institution_id
        ctx.saf.append(SafItem(link=ctx.route.link, mti=ctx.request.mti[:3] + "0",
                               message=fields))
        ctx.response = respond(ctx.request, "00")
