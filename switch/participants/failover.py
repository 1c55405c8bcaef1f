"""Several routes per BIN range, link health, circuit breakers and failover.

``RankRoutes`` replaces ``Route`` for a card in a ``[[routing.ranges]]`` range: its
routes ranked by routing/routes.py (breaker-open links left out, then health,
priority, cost). ``ForwardFailover`` is ``Forward`` with the link's health recorded and
its breaker obeyed: a route whose breaker is open is skipped at once (nobody waits for
that link's timeout), and a request moves to the next route only when it cannot have
reached the issuer (breaker open, link down, nothing written). Once sent, a timeout is
a timeout: 91 and the 0420, as ``Forward``."""

from __future__ import annotations

import trio

from payswitch.routing.bins import RouteDecision
from payswitch.routing.health import ERROR, OK, TIMEOUT
from payswitch.routing.routes import BREAKER_OPEN, SEND_FAILED, rank
from payswitch.switch.errors import IssuerTimeout, LinkBusy, LinkUnavailable
from payswitch.switch.guards import now_ms
from payswitch.switch.participants.forward import Forward, exchange
from payswitch.switch.participants.pin import TranslatePin
from payswitch.switch.participants.route import Route
from payswitch.switch.participants.standin import StandIn
from payswitch.switch.services import Context, Services

DEBIT_ACCOUNTS = ("10", "20")  # DE3 positions 3-4: savings, checking
FORMAT_ERROR = "30"


class RankRoutes(Route):
    def check(self, ctx: Context) -> None:
        svc, req = self.svc, ctx.request
        routing = svc.cfg.routing
        rng = routing.table.eligible(req.pan) if routing is not None and req.pan else None
        if rng is None:
            super().check(ctx)  # [[routes]]: one link per prefix
            return
        t = now_ms()
        guards = svc.guards
        ctx.ranked = rank(rng, req.amount_minor or 0,
                          (req.processing_code or "")[2:4] in DEBIT_ACCOUNTS, t,
                          {n: g.health for n, g in guards.items()},
                          {n: g.breaker for n, g in guards.items()})
        first = ctx.ranked[0].route.link if ctx.ranked else rng.routes[0].link
        ctx.route = RouteDecision(link=first, prefix=rng.prefix)
        skipped = [r.link for r in rng.routes
                   if r.link in guards and not guards[r.link].allow()]
        if skipped:
            ctx.events.append(("route_skipped", {"links": skipped, "reason": BREAKER_OPEN},
                               None))


class ForwardFailover(Forward):
    def __init__(self, svc: Services) -> None:
        super().__init__(svc)
        self._pin = TranslatePin(svc)
        self._stand_in = StandIn(svc)

    async def prepare(self, ctx: Context) -> None:
        try:
            if ctx.ranked is None:  # a [[routes]] card: one link, its breaker obeyed
                await self._attempt(ctx)  # (not through _route: a coroutine fewer)
            else:
                await self._route(ctx)
        except (LinkUnavailable, IssuerTimeout) as e:
            if not await self._stand_in.try_approve(ctx, e):
                raise
            return
        await self._stand_in.observe(ctx)

    async def _route(self, ctx: Context) -> None:
        route = ctx.route
        assert route is not None and ctx.ranked is not None  # RankRoutes ran
        if not ctx.ranked:
            raise LinkUnavailable(f"every route of {route.prefix}: breaker open")
        for i, scored in enumerate(ctx.ranked):
            link = scored.route.link
            if link != route.link:
                route = ctx.route = RouteDecision(link=link, prefix=route.prefix)
                await self._pin.prepare(ctx)  # the PIN under this link's ZPK
            try:
                await self._attempt(ctx)
                return
            except (LinkUnavailable, LinkBusy) as e:
                if ctx.sent or i + 1 == len(ctx.ranked):
                    raise
                reason = BREAKER_OPEN if "breaker" in str(e) else SEND_FAILED
                nxt = ctx.ranked[i + 1].route.link
                ctx.events.append(("failover", {"from": link, "to": nxt, "reason": reason},
                                   link))

    async def _attempt(self, ctx: Context) -> None:
        assert ctx.route is not None
        guard = self.svc.guards.get(ctx.route.link)
        if guard is not None and not guard.allow():
            raise LinkUnavailable(f"link {ctx.route.link}: breaker open")
        started = trio.current_time()
        try:  # Forward.prepare, inline: each wait resumes one coroutine fewer
            link, out = self.outbound(ctx)
            self.answer(ctx, out, await exchange(self.svc, ctx, link, out))
        except IssuerTimeout:
            if guard is not None:
                guard.record(TIMEOUT)
            raise
        except LinkUnavailable:
            if guard is not None:
                guard.record(ERROR)  # down or write failed: not reachable now
            raise
        if guard is not None:
            assert ctx.response is not None  # Forward answered
            code = ctx.response.response_code
            # an answer coded 30: the issuer could not read what we sent (format error)
            guard.record(ERROR if code == FORMAT_ERROR else OK,
                         (trio.current_time() - started) * 1000, approved=code == "00")
