"""Stand-in: the switch approves for an issuer it cannot reach, within the issuer's
limits (routing/standin.py), and tells it later by a durable 0120 advice."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from payswitch.codecs.iso8583.message import Message
from payswitch.routing.standin import (
    APPROVED,
    ISSUER_UNAVAILABLE,
    StandInDecision,
    StandInRequest,
    StandInUsage,
    decide,
    refusal,
)
from payswitch.switch.errors import CardCheckFailed, IssuerTimeout, LinkUnavailable
from payswitch.switch.journal import SafItem, safe_fields
from payswitch.switch.links import transmission_time
from payswitch.switch.messages import KSN_DE, original_data, respond
from payswitch.switch.participants.cardchecks import CheckResult, check_card
from payswitch.switch.participants.risk import RISK_EVENT, card_token
from payswitch.switch.services import Context, Link, Services

STANDIN_EVENT = "standin"
USAGE_MAX_CARDS = 100_000  # cards whose stand-in use today (and last answer) is remembered
# the issuer's answers that say nothing against the card (not a decline of it)
NOT_AGAINST_CARD = frozenset({"00", "08", "10", "11", "91", "96"})


def outbound(svc: Services, ctx: Context, link: Link) -> Message:
    """The request as the issuer would get it (as ``Forward`` builds it)."""
    req = ctx.request
    return req.replace(mti=req.mti[:3] + "0", stan=link.next_stan(),
                       rrn=req.rrn or svc.new_rrn(), transmission_time=transmission_time(),
                       acquirer_id=req.acquirer_id or svc.cfg.switch.institution_id,
                       header=None, pin_block=None, mac=None,
                       other={k: v for k, v in req.other.items() if k != KSN_DE})


def advice_item(out: Message, link: str, auth_code: str) -> SafItem:
    """The 0120 (0220) advice of a stand-in approval: the original's fields, DE38/DE39
    as approved, DE90 = the original's identifiers, which the issuer de-duplicates by
    (it may have seen the original itself when it timed out)."""
    fields = safe_fields(out)
    for name in ("pan_masked", "mti"):
        fields.pop(name, None)
    fields.update(auth_code=auth_code, response_code="00", original_data=original_data(out))
    return SafItem(link=link, mti=out.mti[:2] + "20", message=fields)


def _risk_score(ctx: Context) -> int:
    for event, payload, _ in ctx.events:
        if event == RISK_EVENT:
            return int(payload["score"])
    return 0


class StandIn:
    """Used by ``ForwardFailover`` when the issuer cannot be reached: every route down
    (``LinkUnavailable``), or a timeout where ``on_timeout`` allows. Usage (per card,
    per day) is kept in this process: it starts again after a restart."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.usage = StandInUsage(USAGE_MAX_CARDS)
        # card token -> the issuer's last DE39 for it: a card it declined is not
        # approved in its absence (an exception file built from its own answers)
        self.last_answer: OrderedDict[str, str] = OrderedDict()

    def _section(self, ctx: Context) -> Any:
        routing = self.svc.cfg.routing
        if routing is None or ctx.ranked is None or ctx.route is None:
            return None
        return routing.standin.get(ctx.route.prefix)

    async def observe(self, ctx: Context) -> None:
        """After the issuer answered a request of a stand-in range: keep its answer."""
        if self._section(ctx) is None or ctx.issuer_response is None:
            return
        token = await card_token(self.svc, ctx)
        self.last_answer[token] = ctx.issuer_response.response_code or ""
        self.last_answer.move_to_end(token)
        while len(self.last_answer) > USAGE_MAX_CARDS:
            self.last_answer.popitem(last=False)

    async def try_approve(self, ctx: Context, error: Exception) -> bool:
        """True: ``ctx.response`` is a stand-in approval, the advice queued with it."""
        routing = self.svc.cfg.routing
        section = self._section(ctx)
        timed_out = isinstance(error, IssuerTimeout)
        if section is None or not (isinstance(error, LinkUnavailable)
                                   or (timed_out and section.on_timeout)):
            return False
        route = ctx.route
        assert route is not None and routing is not None and ctx.dup_key is not None  # _section
        req = ctx.request
        token = await card_token(self.svc, ctx)
        why: dict[str, Any] = {"prefix": route.prefix,
                               "after": "timeout" if timed_out else "unreachable"}
        last = self.last_answer.get(token)
        checks = CheckResult()
        if last is not None and last not in NOT_AGAINST_CARD:
            decision = StandInDecision(ISSUER_UNAVAILABLE, f"issuer_declined_{last}")
        else:
            r = StandInRequest(
                card_token=token, amount_minor=req.amount_minor or 0,
                processing_code=req.processing_code or "", mcc=req.mcc or "",
                risk_score=_risk_score(ctx), card_checks_ok=True,
                now_ms=int(time.time() * 1000))
            # the limits first: outside them, 91 without asking the HSM (a card that
            # keeps coming back does not spend its PIN verifications on refusals)
            limit = refusal(section.params, self.usage, r)
            if limit is not None:
                decision = StandInDecision(ISSUER_UNAVAILABLE, limit)
            else:
                checks = await check_card(self.svc, ctx, section.params)
                why["checks"] = checks.done
                if checks.decline is not None:
                    self._declined(ctx, why, checks)
                decision = decide(section.params, self.usage,
                                  replace(r, card_checks_ok=checks.verified))
        why["reason"] = decision.reason
        if decision.response_code != APPROVED:
            ctx.events.append((STANDIN_EVENT, {**why, "response_code": "91"}, route.link))
            return False
        rng = routing.table.eligible(req.pan or "")
        assert rng is not None  # the range this stand-in section belongs to
        primary = rng.routes[0].link
        out = ctx.outbound or outbound(self.svc, ctx, self.svc.links[primary])
        ctx.outbound = out  # PostLedger holds it
        auth = "S" + f"{int(hashlib.sha256(ctx.dup_key.encode()).hexdigest(), 16) % 10**5:05d}"
        ctx.stand_in = decision.reason
        # with DE55 tag 91: the ARPC the issuer's key makes, for the card to check
        ctx.response = respond(req, "00", rrn=out.rrn, auth_code=auth, emv=checks.arpc_de55)
        ctx.saf.append(advice_item(out, primary, auth))
        ctx.events.append((STANDIN_EVENT, {**why, "response_code": "00", "auth_code": auth},
                           primary))
        return True

    def _declined(self, ctx: Context, why: dict[str, Any], checks: CheckResult) -> None:
        """A card check failed: declined in stand-in with its DE39, no advice (the
        issuer would have declined it too; nothing was approved for it)."""
        failed = next(k for k, v in checks.done.items() if v == "failed")
        code = checks.decline or "05"
        link = ctx.route.link if ctx.route else None
        ctx.events.append((STANDIN_EVENT, {**why, "reason": f"card_check_{failed}",
                                           "response_code": code}, link))
        raise CardCheckFailed(f"stand-in: card check {failed} failed", code)
