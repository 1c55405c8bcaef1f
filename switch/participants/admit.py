"""Admission: who sent the request, may it, and is it a transaction the switch carries."""

from __future__ import annotations

import logging

from payswitch.codecs.iso8583 import macing
from payswitch.codecs.iso8583.message import Message
from payswitch.hsm.errors import HsmError
from payswitch.switch.errors import (
    MacInvalid,
    UnknownAcquirer,
    UnknownTerminal,
    UnsupportedTransaction,
)
from payswitch.switch.logs import log
from payswitch.switch.messages import respond
from payswitch.switch.participants.base import Participant
from payswitch.switch.services import Context, Origin, Services

# Processing codes (DE3 positions 1-2) carried on 0100/0200: purchase, ATM cash
# withdrawal, refund, balance inquiry.
SUPPORTED_PROCESSING = frozenset({"00", "01", "20", "31"})


def identify(svc: Services, req: Message, origin: Origin) -> str:
    """Whose request this is (the key of its STAN space), or refuse it."""
    if origin.kind == "acquirer":
        acq = origin.acquirer
        if acq.institution_id and req.acquirer_id != acq.institution_id:
            raise UnknownAcquirer("DE32 does not belong to this acquirer link")
        return f"A:{acq.id}"
    term = svc.terminals.get(req.terminal_id or "")
    if (term is None or (term.listener and term.listener != origin.listener)
            or (term.source and term.source != origin.peer)):
        raise UnknownTerminal("terminal not configured for this listener/source")
    return f"T:{term.id}"


class Identify(Participant):
    """First on every path: DE41 (or the acquirer's DE32) must belong to the
    listener and source address the request came from (58)."""

    sync = True

    def check(self, ctx: Context) -> None:
        ctx.source = identify(self.svc, ctx.request, ctx.origin)


class NotCarried(Participant):
    """The path of an MTI the switch does not carry: 12."""

    sync = True

    def check(self, ctx: Context) -> None:
        raise UnsupportedTransaction(f"MTI {ctx.request.mti} not carried")


class NetworkManagement(Participant):
    """08xx from a terminal or acquirer host: answered here (00), 58 to a terminal that
    is not configured. Nothing journalled."""

    sync = True

    def check(self, ctx: Context) -> None:
        known = True
        if ctx.origin.kind == "terminal":
            try:
                identify(self.svc, ctx.request, ctx.origin)
            except (UnknownTerminal, UnknownAcquirer):
                known = False
        ctx.response = respond(ctx.request, "00" if known else "58")


class CheckMac(Participant):
    """A terminal with a TAK (``terminals[].mac_key``) MACs every request: ISO 9797-1
    alg. 3 (TDES TAK) or AES-CMAC (AES TAK) over the message as received up to the MAC,
    in DE64 (DE128 with a secondary bitmap), the same rule as link MACs
    (``codecs.iso8583.macing``), verified in the HSM. A missing or wrong MAC is refused
    first, before the duplicate check claims anything: DE39 63, counted. A spoofed DE41
    (another terminal's id behind the same address) cannot pass without its TAK."""

    async def prepare(self, ctx: Context) -> None:
        svc = self.svc
        if ctx.origin.kind != "terminal":
            return
        term = svc.terminals.get(ctx.request.terminal_id or "")
        if term is None or not term.mac_key:
            return
        body = macing.mac_input(ctx.payload, ctx.request) if ctx.payload is not None else None
        ok = False
        if body is not None and ctx.request.mac is not None:  # no DE64/128: refused
            if svc.hsm is None:
                raise HsmError("terminal MAC key configured but no [hsm]")
            try:
                ok = await svc.hsm.verify_mac(term.mac_key, body, ctx.request.mac)
            except HsmError as e:
                svc.metrics.hsm_errors.labels(type(e).__name__).inc()
                raise
        if not ok:
            svc.metrics.terminal_mac_failures.labels(term.id).inc()
            log("terminal_mac_invalid", logging.WARNING, terminal=term.id,
                mti=ctx.request.mti, stan=ctx.request.stan, missing=ctx.request.mac is None)
            raise MacInvalid("missing or wrong terminal MAC")


class CheckTransaction(Participant):
    """0100/0200: a processing code the switch carries (12 otherwise)."""

    sync = True

    def check(self, ctx: Context) -> None:
        code = (ctx.request.processing_code or "")[:2]
        if code not in SUPPORTED_PROCESSING:
            raise UnsupportedTransaction("processing code not carried")
