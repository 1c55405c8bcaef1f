"""On-us: the card's issuer is this switch ([[onus]] BIN ranges, with the ledger on).
``CheckOnus`` decides which list of participants runs next (switch/participants/
__init__.py); the others run only on the on-us list."""

from __future__ import annotations

from payswitch.switch.errors import LedgerUnavailable
from payswitch.switch.messages import respond
from payswitch.switch.participants.base import Participant
from payswitch.switch.participants.hold import void_unknown_hold
from payswitch.switch.services import Context


class CheckOnus(Participant):
    sync = True

    def check(self, ctx: Context) -> None:
        if self.svc.ledger is not None:
            ctx.onus = self.svc.ledger.onus_range(ctx.request.pan)


class AuthorizeOnus(Participant):
    """The switch as issuer: a hold on the cardholder's account (00 with an auth code),
    or 51 / 05 / 96. On-us cards get no PIN translation: their PIN is not verified yet
    (no issuer PVK in the switch's token).

    Abort: a hold written, or whose write failed with an unknown outcome, is voided."""

    async def prepare(self, ctx: Context) -> None:
        req, led = ctx.request, self.svc.ledger
        assert led is not None and ctx.dup_key is not None and ctx.onus is not None  # CheckOnus
        ctx.hold = "unknown"
        try:
            auth_code = await led.authorize_onus(ctx.dup_key, req, ctx.onus)
        except LedgerUnavailable:
            raise  # may have committed: ctx.hold stays "unknown", abort voids it
        except Exception:
            ctx.hold = None  # a refusal (51, 05, 12): nothing was written
            raise
        ctx.hold = "held"
        ctx.response = respond(req, "00", rrn=req.rrn or self.svc.new_rrn(),
                               auth_code=auth_code)

    async def abort(self, ctx: Context) -> None:
        if ctx.hold is not None:
            void_unknown_hold(self.svc, ctx)


class AcknowledgeAdvice(Participant):
    """On-us 0120: the switch is the issuer, nothing to forward: 00."""

    async def prepare(self, ctx: Context) -> None:
        ctx.response = respond(ctx.request, "00")


class PostCompletion(Participant):
    """On-us completion advice (0220), after ``LocateOriginal``: post the original's
    hold for DE4 (partial allowed, the rest released). Off-us completions go to the
    network as advices (``StoreAdvice``) and their holds are posted at clearing."""

    async def prepare(self, ctx: Context) -> None:
        assert self.svc.ledger is not None and ctx.original is not None  # LocateOriginal
        await self.svc.ledger.complete(ctx.original.dup_key, ctx.request.amount_minor or 0)
        ctx.response = respond(ctx.request, "00")
