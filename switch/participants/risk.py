"""Risk scoring of every 0100/0200 before it is forwarded (off-us) or held (on-us)."""

from __future__ import annotations

import hashlib
import hmac
import logging

from payswitch.routing.risk_decision import DECLINE
from payswitch.switch import pans
from payswitch.switch.errors import LedgerUnavailable, RiskDeclined, RiskDeclinedDoNotHonour
from payswitch.switch.logs import log
from payswitch.switch.participants.base import Participant
from payswitch.switch.risk import auth_input, journal_fields
from payswitch.switch.services import Context, Services

RISK_EVENT = "risk_scored"
ONUS_ISSUER = "onus"  # the issuer name of on-us cards in [risk.issuers]


async def card_token(svc: Services, ctx: Context) -> str:
    """The card as the risk state keys it: the HSM PAN token (the journal's), else an
    HMAC under the switch's fingerprint key. Never the PAN."""
    if svc.hsm is not None:
        if ctx.pan_prot is None:
            ctx.pan_prot = await pans.protect(svc, ctx)
        if ctx.pan_prot is not None:
            return ctx.pan_prot[0]
    return hmac.new(svc.fingerprint_key, (ctx.request.pan or "").encode(),
                    hashlib.sha256).hexdigest()[:32]


class ScoreRisk(Participant):
    """Scores the request (routing/risk_decision.py) and records the score, action and
    reasons on a ``risk_scored`` journal row. Decline: 59, or 05 where the issuer's
    ``decline_code`` says so, before anything is sent or held. Refer: the request goes
    on to its issuer (the one it is referred to), the referral recorded. Shadow mode:
    scored and recorded, never declined. Without ``[risk]``: nothing."""

    async def prepare(self, ctx: Context) -> None:
        engine = self.svc.risk
        if engine is None:
            return
        req = ctx.request
        issuer = ctx.route.link if ctx.route is not None else ONUS_ISSUER
        auth = auth_input(req, await card_token(self.svc, ctx), engine.at_ms(req))
        d = engine.assess(auth, issuer)
        m = self.svc.metrics
        m.risk_decisions.labels(d.action).inc()
        m.risk_score.observe(d.score)
        ctx.events.append((RISK_EVENT, journal_fields(d, auth), None))
        if d.action != DECLINE:
            return
        await self._ledger_event(ctx, issuer, d.response_code or "59", d.reasons)
        cls = RiskDeclinedDoNotHonour if d.response_code == "05" else RiskDeclined
        raise cls(f"risk score {d.score}: {', '.join(d.reasons) or 'model'}")

    async def _ledger_event(self, ctx: Context, route: str, code: str,
                            reasons: tuple[str, ...]) -> None:
        """The payment's ``declined`` event carries the reasons; the answer stands if
        that write fails."""
        led = self.svc.ledger
        if led is None or ctx.dup_key is None:
            return
        try:
            await led.declined(ctx.dup_key, ctx.request, route, code,
                               reasons=list(reasons))
        except LedgerUnavailable as e:
            log("ledger_events_failed", logging.ERROR, error=str(e), stan=ctx.request.stan)
