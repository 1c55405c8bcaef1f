"""Routing: the issuer link of an off-us card (BIN table, ``[[routes]]``)."""

from __future__ import annotations

from payswitch.switch.participants.base import Participant
from payswitch.switch.services import Context


class Route(Participant):
    """Chooses the link (15 unknown BIN, 14 no PAN). Before ``TranslatePin``: the
    link decides the ZPK."""

    sync = True

    def check(self, ctx: Context) -> None:
        ctx.route = self.svc.router.route(ctx.request)
