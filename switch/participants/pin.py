"""PIN translation, a thin wrapper over the HSM's translate call."""

from __future__ import annotations

from payswitch.hsm.errors import HsmError, HsmInputError
from payswitch.switch.errors import PinKeyMissing
from payswitch.switch.messages import KSN_DE, pan_of
from payswitch.switch.participants.base import Participant
from payswitch.switch.services import Context


class TranslatePin(Participant):
    """DE52 from the terminal's key (TPK, or TDES DUKPT with the KSN in DE62) to the
    chosen link's ZPK (``Route`` ran before), inside the HSM: the clear PIN never
    reaches this process's code (see hsm/README), and no PIN block is logged or
    stored. Without an [hsm] section (development only) the block passes as received.
    81 for a block or KSN the HSM refuses, 96 for a missing key or a failing HSM."""

    async def prepare(self, ctx: Context) -> None:
        svc, req = self.svc, ctx.request
        if req.pin_block is None:
            return
        if svc.hsm is None:
            ctx.pin_block = req.pin_block
            return
        assert ctx.route is not None  # Route runs before PIN translation
        # the link's current ZPK (changed by a key change), else the configured one
        zpk = getattr(svc.links.get(ctx.route.link), "zpk", None) or svc.cfg.link(
            ctx.route.link).zpk
        key, mode = svc.pin_key_of(ctx)
        if not zpk or not key:
            raise PinKeyMissing("no terminal PIN key" if not key else "no ZPK on the link")
        pan = pan_of(req)
        try:
            if mode == "dukpt":
                ctx.pin_block = await svc.hsm.translate_pin_dukpt(
                    req.pin_block, _ksn(req.other.get(KSN_DE)), pan, key, zpk)
            else:
                ctx.pin_block = await svc.hsm.translate_pin(req.pin_block, pan, key, zpk)
        except HsmError as e:
            svc.metrics.hsm_errors.labels(type(e).__name__).inc()
            raise


def _ksn(ksn_hex: object) -> bytes:
    try:
        ksn = bytes.fromhex(ksn_hex) if isinstance(ksn_hex, str) else None
    except ValueError:
        ksn = None
    if ksn is None or len(ksn) != 10:
        raise HsmInputError(f"DUKPT terminal without a 20-hex-digit KSN in DE{KSN_DE}")
    return ksn
