"""Stand-in card checks: what the issuer would verify, done by the switch with the
issuer's keys in its own HSM, where the issuer's config grants it (routing/standin.py
``card_checks``). Verification commands only (the switch role has no clear-PIN or
generate command): ``verify_pin_pvv``, ``verify_cvv``, ``verify_arqc``.

A check applies when the request carries its data: PVV when there is a PIN block,
CVV / iCVV when there is track 2 (DE35), ARQC when there is DE55. An applicable check
that is not granted, or cannot be done (no PVV on the track, an HSM fault), is
*skipped*: the card is then not verified, and ``require_card_checks`` refuses stand-in
(91). A check that fails declines: 55 wrong PIN (75 past the HSM's per-card PIN
verification limit), else the issuer's ``check_decline_code`` (82 or 05).

Track 2 discretionary data, as the simulators' cards carry it: CVV (3 digits, iCVV on
chip data), then PVKI (1) and PVV (4). Track 1 (DE45) is not carried by our dialects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from payswitch.codecs.errors import CodecError
from payswitch.codecs.tlv import Tlv, as_tag, decode_tlv, encode_tlv
from payswitch.hsm import ICVV_SERVICE_CODE, emv
from payswitch.hsm.errors import HsmError, HsmInputError, PinBlockError, PinVerifyLimitError
from payswitch.routing.standin import CHECK_KEYS, StandInParams
from payswitch.switch.config import Config, ConfigError
from payswitch.switch.messages import pan_of
from payswitch.switch.services import Context, Services

WRONG_PIN, PIN_TRIES_EXCEEDED = "55", "75"
OK, FAILED, NOT_GRANTED, NOT_DONE = "ok", "failed", "not_granted", "not_done"
CHIP_ENTRY = ("05", "07")  # DE22: chip, contactless chip: the track carries the iCVV


@dataclass(slots=True)
class CheckResult:
    done: dict[str, str] = field(default_factory=dict)  # check -> OK / FAILED / NOT_...
    decline: str | None = None  # DE39 of the first failed check
    arpc_de55: bytes | None = None  # tag 91 for an approval (ARPC method 1, ARC 00)

    @property
    def verified(self) -> bool:
        """Every applicable check done and passed, and at least one applied."""
        return bool(self.done) and all(v == OK for v in self.done.values())


def track2_parts(track2: str) -> tuple[str, str, str, str, str, str] | None:
    """(pan, expiry, service code, CVV, PVKI, PVV) from DE35; '' for what is absent."""
    pan, sep, rest = track2.replace("D", "=").partition("=")
    if not sep or not pan.isdigit() or len(rest) < 7 or not rest[:7].isdigit():
        return None
    dd = rest[7:]
    cvv = dd[:3] if dd[:3].isdigit() and len(dd) >= 3 else ""
    pvv = dd[4:8] if len(dd) >= 8 and dd[3:8].isdigit() else ""
    return pan, rest[:4], rest[4:7], cvv, dd[3:4] if pvv else "", pvv


def _link_zpk(svc: Services, link: str) -> str:
    """The link's current ZPK (a key change moves it), else the configured one."""
    return getattr(svc.links.get(link), "zpk", None) or svc.cfg.link(link).zpk


async def check_card(svc: Services, ctx: Context, p: StandInParams) -> CheckResult:
    out = CheckResult()
    req = ctx.request
    pan = pan_of(req) or ""
    t2 = track2_parts(req.track2) if req.track2 else None
    steps = ((req.pin_block is not None, "pvv", _pvv), (req.track2 is not None, "cvv", _cvv),
             (req.emv is not None, "arqc", _arqc))
    for applies, name, step in steps:
        if not applies:
            continue
        if name not in p.card_checks or svc.hsm is None:
            out.done[name] = NOT_GRANTED
            continue
        try:
            ok = await step(svc, ctx, p, pan, t2, out)
        except PinVerifyLimitError:
            out.done[name], out.decline = FAILED, PIN_TRIES_EXCEEDED
            return out
        except (HsmInputError, PinBlockError, CodecError):
            ok = False  # the card's data is malformed: it does not verify
        except HsmError:
            ok = None  # ours (key missing, device): not checked
        out.done[name] = NOT_DONE if ok is None else OK if ok else FAILED
        if ok is False:
            out.decline = WRONG_PIN if name == "pvv" else p.check_decline_code
            return out
    return out


async def _pvv(svc, ctx, p, pan, t2, out) -> bool | None:
    if t2 is None or not t2[5] or ctx.pin_block is None:
        return None  # no PVV on the card's track: nothing to verify against
    return await svc.hsm.verify_pin_pvv(ctx.pin_block, pan, _link_zpk(svc, ctx.route.link),
                                        p.pvk, t2[5], pvki=int(t2[4]))


async def _cvv(svc, ctx, p, pan, t2, out) -> bool | None:
    if t2 is None or not t2[3]:
        return False
    chip = (ctx.request.pos_entry_mode or "")[:2] in CHIP_ENTRY
    code = ICVV_SERVICE_CODE if chip else t2[2]
    return await svc.hsm.verify_cvv(p.cvk, t2[0], t2[1], code, t2[3])


async def _arqc(svc, ctx, p, pan, t2, out) -> bool | None:
    req = ctx.request
    tags = {t.tag_hex: t.value for t in decode_tlv(req.emv) if isinstance(t.value, bytes)}
    cvn = emv.cvn_of(tags)  # the CVN the card names in its IAD
    ok, arpc = await svc.hsm.verify_arqc(
        p.mkac, pan, (req.card_sequence or "000")[-2:], emv.atc_of(tags),
        emv.arqc_input(tags, cvn), tags.get("9F26", b""), arc=b"00", cvn=cvn,
        un=tags.get("9F37"))
    if ok and arpc:
        out.arpc_de55 = encode_tlv([Tlv(as_tag("91"), arpc + b"00")])
    return bool(ok)


KEY_TYPES = {"pvk": "PVK", "cvk": "CVK", "mkac": "MK-AC"}


def check_standin_keys(cfg: Config, hsm: Any) -> None:
    """At start: every key a stand-in section names is in the switch's token, of its
    type; else a ``ConfigError`` naming the key (the issuer's keys are shared with the
    switch by key ceremony, by label; a clear key never appears in config)."""
    for prefix, sec in (cfg.routing.standin.items() if cfg.routing else ()):
        p = sec.params
        for check, key in CHECK_KEYS.items():
            label = getattr(p, key)
            if check not in p.card_checks:
                continue
            where = f"routing.standin.{prefix}.{key}"
            if not hsm.has_key(label):
                raise ConfigError(f"{where}: no key {label!r} in the HSM token")
            if hsm.key_info(label).key_type.value != KEY_TYPES[key]:
                raise ConfigError(f"{where}: {label!r} is not a {KEY_TYPES[key]}")
