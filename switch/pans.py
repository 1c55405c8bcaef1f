"""The PAN at rest: token + AES-GCM blob made in the HSM for journal and SAF rows, the
blob decrypted again for a resent message, and the card part of a duplicate's
fingerprint. Functions over ``Services``: used by participants, the journal writer and
the SAF sender alike."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
from typing import Any

from payswitch.hsm.aio import AsyncHsm
from payswitch.hsm.errors import HsmError
from payswitch.switch.config import Config, ConfigError
from payswitch.switch.journal import pan_aad
from payswitch.switch.logs import log
from payswitch.switch.messages import pan_of
from payswitch.switch.services import Context, Services


async def protect(svc: Services, ctx: Context, pan: str | None = None,
                  ) -> tuple[str, bytes] | None:
    """(token, AES-GCM blob) of the request's PAN (or ``pan``: a reversal's is its
    original's), made in the HSM, for the journal and SAF rows; None without an HSM
    or a PAN, or when the HSM fails (logged: the row is then stored without it, and
    a resent message goes without DE2)."""
    pan = pan or pan_of(ctx.request)
    if svc.hsm is None or not pan:
        return None
    h = svc.cfg.hsm
    try:
        if isinstance(svc.hsm, AsyncHsm):  # one command (one hop in thread mode)
            token, blob = await svc.hsm.protect_pan(h.pan_tkn, h.pan_dek, pan,
                                                    pan_aad(ctx.dup_key))
        else:
            token = await svc.hsm.pan_token(h.pan_tkn, pan)
            blob = await svc.hsm.encrypt_pan(h.pan_dek, pan, pan_aad(ctx.dup_key))
    except HsmError as e:
        svc.metrics.hsm_errors.labels(type(e).__name__).inc()
        log("pan_protect_failed", logging.ERROR, error=str(e), stan=ctx.request.stan,
            note="stored without DE2")
        return None
    return token, blob


async def protect_saf(svc: Services, ctx: Context) -> None:
    """Give each SAF item the PAN as token + blob, so that the resent message
    carries DE2 again (the answer to the sender never waits on this failing)."""
    if not any(i.pan_enc is None for i in ctx.saf):
        return
    if ctx.pan_prot is None:
        ctx.pan_prot = await protect(svc, ctx)
    if ctx.pan_prot is None:
        return
    token, blob = ctx.pan_prot
    ctx.saf = [i if i.pan_enc is not None else dataclasses.replace(
        i, pan_token=token, pan_enc=blob) for i in ctx.saf]


async def stored(svc: Services, blob: bytes | None, dup_key: str | None,
                 **where: Any) -> str | None:
    """A PAN kept at rest (AES-GCM under the DEK, the payment's dup_key as associated
    data), decrypted in the HSM; None: not stored, no HSM, or it fails (logged)."""
    if blob is None or svc.hsm is None:
        return None
    try:
        return await svc.hsm.decrypt_pan(svc.cfg.hsm.pan_dek, bytes(blob), pan_aad(dup_key))
    except HsmError as e:
        svc.metrics.hsm_errors.labels(type(e).__name__).inc()
        log("pan_decrypt_failed", logging.ERROR, error=str(e), **where)
        return None


async def fingerprint(svc: Services, ctx: Context) -> str:
    """What the duplicate key leaves out: the card (its HSM token, made once and kept
    for the journal, else an HMAC under the switch's key; never a plain PAN hash),
    processing code and currency."""
    req = ctx.request
    pan = pan_of(req) or ""
    card = None
    if pan and svc.hsm is not None:
        if ctx.pan_prot is None:
            ctx.pan_prot = await protect(svc, ctx)
        if ctx.pan_prot is not None:
            card = "tkn:" + ctx.pan_prot[0]
    if card is None:
        card = "mac:" + hmac.new(svc.fingerprint_key, pan.encode(),
                                 hashlib.sha256).hexdigest()
    parts = (card, req.processing_code or "", req.currency or "")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def fingerprint_key(cfg: Config) -> bytes:
    """Key of the PAN hash in a duplicate fingerprint when there is no HSM token: from
    the env variable named by switch.fingerprint_key_env, else random (a duplicate
    after a restart then gets 94, not the original's answer)."""
    var = cfg.switch.fingerprint_key_env
    value = os.environ.get(var, "")
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"${var} is not hex") from None
    if value and len(key) < 16:
        raise ConfigError(f"${var}: need a hex key of at least 16 bytes")
    if key:
        return key
    if not cfg.hsm.token:
        log("fingerprint_key_random", logging.WARNING, env=var,
            note="a duplicate after a restart is answered 94, not replayed")
    return os.urandom(32)
