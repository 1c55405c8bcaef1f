"""The participants a request passes through, in order, per message class.

A participant is ``async def step(switch, ctx) -> None``: it reads and fills the
``Context``, raises a typed error to refuse, or sets ``ctx.done`` to stop the pipeline
(a duplicate answered from the journal). Errors become DE39 codes in one place:
``payswitch.switch.errors.response_code_for``, called by ``Switch.handle``.

``check_mac`` (first in every class) verifies a TAK terminal's request MAC in the HSM
(63 when missing or wrong). ``match_original`` makes a reversal its original's: same
amount (13), same card (25), DE2 from the original's encrypted PAN.

``translate_pin`` asks the HSM to translate the terminal's PIN block (TPK or TDES
DUKPT) to the issuer link's ZPK; card checks (CVV, ARQC) are the issuer's, with its
own keys. Hook point for later issues (no-op today): ``score_risk`` (routing/ risk
scoring).

Ledger steps (active when ``[ledger] enabled``, see switch/ledgerwire.py): ``check_onus``
(an [[onus]] BIN: the switch is the issuer, ``forward`` authorizes against the
cardholder's account instead of a link), ``post_ledger`` (an issuer's approval: pending
hold network receivable -> merchant payable, written BEFORE the terminal is answered;
if it fails: 96 and a 0420 to the issuer), ``void_ledger`` (reversal: void the hold),
``post_completion`` (on-us 0220: post the hold, partly if smaller). On-us cards skip
``translate_pin``: their PIN is not verified yet (no issuer PVK in the switch's token).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from payswitch.codecs.iso8583 import macing
from payswitch.codecs.iso8583.message import Message
from payswitch.codecs.pan import mask_pan
from payswitch.hsm.errors import HsmError, HsmInputError
from payswitch.routing.bins import RouteDecision
from payswitch.switch.errors import (
    DuplicateStillInFlight,
    IssuerTimeout,
    LedgerUnavailable,
    LinkBusy,
    LinkUnavailable,
    MacInvalid,
    OriginalNotFound,
    PinKeyMissing,
    ReversalAmountMismatch,
    ReversalCardMismatch,
    UnsupportedTransaction,
    response_code_for,
)
from payswitch.switch.journal import Original, SafItem, message_from_safe, safe_fields
from payswitch.switch.links import transmission_time
from payswitch.switch.logs import log

if TYPE_CHECKING:
    from payswitch.switch.server import Switch

# Processing codes (DE3 positions 1-2) carried on 0100/0200: purchase, ATM cash
# withdrawal, refund, balance inquiry.
SUPPORTED_PROCESSING = frozenset({"00", "01", "20", "31"})
# A DUKPT terminal sends its KSN here, as 20 hex characters: DE53 is n16 in ISO
# 8583:1987 and cannot hold a 10-byte KSN. Private use, never forwarded to an issuer.
KSN_DE = 62
# DE39 codes that approve, and so hold funds at the issuer: 00 approved, 08 honour
# with identification, 10 partial approval, 11 approved (VIP). Each needs reversing.
APPROVAL_CODES = frozenset({"00", "08", "10", "11"})
DUPLICATE_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Origin:
    kind: str  # terminal | acquirer
    listener: str
    peer: str  # source address
    acquirer: Any = None  # AcquirerSection for acquirer links


@dataclass(slots=True)
class Context:
    request: Message
    origin: Origin
    payload: bytes | None = None  # the request's bytes as received (terminal MAC)
    source: str = ""  # "T:<DE41>" or "A:<acquirer id>": whose STANs these are
    dup_key: str | None = None
    owner: bool = False  # this task owns the request's journal entry
    route: RouteDecision | None = None
    onus: Any = None  # the [[onus]] section when the switch is this card's issuer
    original: Original | None = None
    original_pan: str | None = None  # a reversal's: its original's PAN (match_original)
    pin_block: bytes | None = None  # DE52 under the issuer link's ZPK (translate_pin)
    pan_prot: tuple[str, bytes] | None = None  # (PAN token, AES-GCM PAN) for storage
    outbound: Message | None = None  # what went to the issuer
    issuer_response: Message | None = None
    response: Message | None = None
    done: bool = False  # answered early (a duplicate replayed)
    reversal_of: str | None = None  # dup_key of the original this reversal reverses
    error: str | None = None  # the typed error that decided the answer, for the log
    events: list[tuple[str, Message, str | None]] = field(default_factory=list)
    saf: list[SafItem] = field(default_factory=list)
    owed: int = 0  # the last ``owed`` SAF items exist only because the sender was told 96


Step = Callable[["Switch", Context], Awaitable[None]]


# -- building messages --------------------------------------------------------------
def respond(req: Message, code: str, *, rrn: str | None = None, auth_code: str | None = None,
            additional_amounts: str | None = None, emv: bytes | None = None) -> Message:
    """The response to ``req``: its identifying fields echoed, the outcome added."""
    return Message(
        mti=req.response_mti, pan=req.pan, processing_code=req.processing_code,
        amount_minor=req.amount_minor, transmission_time=req.transmission_time,
        stan=req.stan, local_time=req.local_time, local_date=req.local_date,
        acquirer_id=req.acquirer_id, rrn=rrn or req.rrn, auth_code=auth_code,
        response_code=code, terminal_id=req.terminal_id, merchant_id=req.merchant_id,
        currency=req.currency, additional_amounts=additional_amounts, emv=emv,
        network_code=req.network_code,
    )


def replay(req: Message, stored: dict[str, Any]) -> Message:
    """The original's answer again, rebuilt from the journal: same fields, same bytes
    (bar DE55 issuer data, which is never stored)."""
    return respond(req, stored["response_code"], rrn=stored.get("rrn"),
                   auth_code=stored.get("auth_code"),
                   additional_amounts=stored.get("additional_amounts"))


def original_data(out: Message) -> str:
    """DE90: original MTI, STAN, DE7, acquiring and forwarding institution (11 each)."""
    return (out.mti + (out.stan or "0" * 6) + (out.transmission_time or "0" * 10)
            + (out.acquirer_id or "").zfill(11) + (out.forwarding_id or "").zfill(11))


def reversal_item(out: Message, link: str) -> SafItem:
    """A 0420 reversal advice for what the issuer may have seen (``out``).

    For an authorization or financial request, DE90 points at ``out`` itself; for an
    unconfirmed 0400, the 0420 repeats its DE90 (the original it reverses), so that a
    reversal is never itself reversed.
    """
    fields = safe_fields(out)
    for name in ("pan_masked", "auth_code", "response_code", "additional_amounts", "mti"):
        fields.pop(name, None)
    is_reversal = out.mti[:2] == "04" and out.original_data
    fields["original_data"] = out.original_data if is_reversal else original_data(out)
    return SafItem(link=link, mti="0420", message=fields)


def duplicate_key(source: str, req: Message) -> str:
    """(who, message class, STAN, DE7, amount): a repeat (0101) keys as its original."""
    return "|".join((source, req.mti[:3] + "0", req.stan or "", req.transmission_time or "",
                     str(req.amount_minor if req.amount_minor is not None else "")))


# -- participants ---------------------------------------------------------------------
async def check_mac(sw: Switch, ctx: Context) -> None:
    """A terminal with a TAK (``terminals[].mac_key``) MACs every request: ISO 9797-1
    alg. 3 (TDES TAK) or AES-CMAC (AES TAK) over the message as received up to the MAC,
    in DE64 (DE128 with a secondary bitmap), the same rule as link MACs
    (``codecs.iso8583.macing``), verified in the HSM. A missing or wrong MAC is refused
    first, before the duplicate check claims anything: DE39 63, counted. A spoofed DE41
    (another terminal's id behind the same address) cannot pass without its TAK."""
    if ctx.origin.kind != "terminal":
        return
    term = sw.terminals.get(ctx.request.terminal_id or "")
    if term is None or not term.mac_key:
        return
    body = macing.mac_input(ctx.payload, ctx.request) if ctx.payload is not None else None
    ok = False
    if body is not None:
        try:
            ok = await sw.hsm.verify_mac(term.mac_key, body, ctx.request.mac)
        except HsmError as e:
            sw.metrics.hsm_errors.labels(type(e).__name__).inc()
            raise
    if not ok:
        sw.metrics.terminal_mac_failures.labels(term.id).inc()
        log("terminal_mac_invalid", logging.WARNING, terminal=term.id,
            mti=ctx.request.mti, stan=ctx.request.stan, missing=ctx.request.mac is None)
        raise MacInvalid("missing or wrong terminal MAC")


async def check_transaction(sw: Switch, ctx: Context) -> None:
    code = (ctx.request.processing_code or "")[:2]
    if code not in SUPPORTED_PROCESSING:
        raise UnsupportedTransaction("processing code not carried")


async def check_duplicate(sw: Switch, ctx: Context) -> None:
    ctx.dup_key = duplicate_key(ctx.source, ctx.request)
    fingerprint = await sw.fingerprint(ctx)
    claim = await sw.store.claim(ctx.dup_key, ctx.source, ctx.request, fingerprint)
    if claim.owner:
        ctx.owner = True
        sw.in_flight_keys[ctx.dup_key] = trio.Event()
        return
    sw.metrics.duplicates.inc()
    if not claim.same:  # same key, another card / transaction: not the original's answer
        ctx.response = respond(ctx.request, "94")
        ctx.done = True
        return
    stored = claim.response
    if stored is None:
        stored = await _wait_for_original(sw, ctx.dup_key)
    ctx.response = replay(ctx.request, stored)
    ctx.done = True


async def _wait_for_original(sw: Switch, key: str) -> dict[str, Any]:
    with trio.move_on_after(sw.cfg.switch.duplicate_wait_ms / 1000):
        while True:
            event = sw.in_flight_keys.get(key)
            if event is not None:
                await event.wait()
            stored = await sw.store.outcome(key)
            if stored is not None:
                return stored
            if event is None:  # owned by another process: poll
                await trio.sleep(DUPLICATE_POLL_S)
    raise DuplicateStillInFlight("original still in flight")


def pan_of(req: Message) -> str | None:
    """DE2, else the PAN in track 2 (DE35): the PAN a format 0 PIN block is bound to."""
    if req.pan:
        return req.pan
    if req.track2:
        pan = req.track2.replace("D", "=").split("=", 1)[0]
        return pan if pan.isdigit() else None
    return None


async def translate_pin(sw: Switch, ctx: Context) -> None:
    """DE52 from the terminal's key (TPK, or TDES DUKPT with the KSN in DE62) to the
    issuer link's ZPK, inside the HSM path: the clear PIN never reaches this process's
    code (see hsm/README), and no PIN block is logged or stored.

    Needs the route (the link decides the ZPK), so it routes here when nothing has yet.
    Without an [hsm] section (development only) the block passes as received.
    """
    req = ctx.request
    if req.pin_block is None or ctx.onus is not None:
        return
    if sw.hsm is None:
        ctx.pin_block = req.pin_block
        return
    if ctx.route is None:
        ctx.route = sw.router.route(req)
    zpk = sw.cfg.link(ctx.route.link).zpk
    key, mode = sw.pin_key_of(ctx)
    if not zpk or not key:
        raise PinKeyMissing("no terminal PIN key" if not key else "no ZPK on the link")
    pan = pan_of(req)
    try:
        if mode == "dukpt":
            ksn_hex = req.other.get(KSN_DE)
            try:
                ksn = bytes.fromhex(ksn_hex) if isinstance(ksn_hex, str) else None
            except ValueError:
                ksn = None
            if ksn is None or len(ksn) != 10:
                raise HsmInputError(f"DUKPT terminal without a 20-hex-digit KSN in DE{KSN_DE}")
            ctx.pin_block = await sw.hsm.translate_pin_dukpt(req.pin_block, ksn, pan, key, zpk)
        else:
            ctx.pin_block = await sw.hsm.translate_pin(req.pin_block, pan, key, zpk)
    except HsmError as e:
        sw.metrics.hsm_errors.labels(type(e).__name__).inc()
        raise


async def score_risk(sw: Switch, ctx: Context) -> None:
    """Risk hook: score the authorization, decline or flag. No-op."""


async def check_onus(sw: Switch, ctx: Context) -> None:
    if sw.ledger is not None:
        ctx.onus = sw.ledger.onus_range(ctx.request.pan)


async def route(sw: Switch, ctx: Context) -> None:
    if ctx.onus is None and ctx.route is None:  # translate_pin may have routed already
        ctx.route = sw.router.route(ctx.request)


LEDGER_VOID_EVENT = "ledger_void_pending"


def void_unknown_hold(sw: Switch, ctx: Context) -> None:
    """The hold's write failed or timed out but may have committed, and the sender is
    told 96: void it (same deterministic ids) now in the background, and journal the
    need with the answer, so that the next start voids it too if this process dies
    first (``Store.ledger_voids_due``)."""
    sw.ledger.void_later(ctx.dup_key)
    ctx.events.append((LEDGER_VOID_EVENT, {"reason": "ledger outcome unknown"}, None))


async def authorize_onus(sw: Switch, ctx: Context) -> None:
    """The switch as issuer: hold on the cardholder's account, or 51 / 05 / 96."""
    req = ctx.request
    try:
        auth_code = await sw.ledger.authorize_onus(ctx.dup_key, req, ctx.onus)
    except LedgerUnavailable:
        void_unknown_hold(sw, ctx)
        raise
    ctx.response = respond(req, "00", rrn=req.rrn or sw.new_rrn(), auth_code=auth_code)


async def forward(sw: Switch, ctx: Context) -> None:
    """Send to the issuer link through its MUX; on timeout queue a 0420 and answer 91."""
    req = ctx.request
    if ctx.onus is not None:
        return await authorize_onus(sw, ctx)
    link = sw.links[ctx.route.link]
    if link.state != "signed_on":
        raise LinkUnavailable(f"link {link.name} is {link.state}")
    out = req.replace(mti=req.mti[:3] + "0", stan=link.next_stan(), rrn=req.rrn or sw.new_rrn(),
                      transmission_time=transmission_time(),
                      acquirer_id=req.acquirer_id or sw.cfg.switch.institution_id,
                      header=None, pin_block=ctx.pin_block, mac=None,
                      other={k: v for k, v in req.other.items() if k != KSN_DE})
    resp = await _exchange(sw, ctx, link, out)
    ctx.response = respond(req, resp.response_code or "96", rrn=out.rrn,
                           auth_code=resp.auth_code,
                           additional_amounts=resp.additional_amounts, emv=resp.emv)


async def _exchange(sw: Switch, ctx: Context, link: Any, out: Message) -> Message | None:
    """Journal ``out`` (before sending: after a crash, recovery knows the issuer may have
    it), send it, and on a timeout queue the 0420 that undoes it.

    For a reversal (``ctx.reversal_of``) the journal row also claims the original's one
    reversal; None, and nothing sent, when another reversal has it already."""
    ctx.outbound = out
    if ctx.pan_prot is None:
        ctx.pan_prot = await sw.protect_pan(ctx)
    if not await sw.store.append("issuer_request", out, source=ctx.source, link=link.name,
                                 dup_key=ctx.dup_key, pan=ctx.pan_prot,
                                 reversal_of=ctx.reversal_of):
        ctx.outbound = None
        return None
    try:
        resp = await link.request(out)
    except IssuerTimeout:
        ctx.saf.append(reversal_item(out, link.name))
        raise
    ctx.issuer_response = resp
    ctx.events.append(("issuer_response", resp, link.name))
    return resp


async def post_ledger(sw: Switch, ctx: Context) -> None:
    """An issuer's approval: pending hold network receivable -> merchant payable, committed
    before the terminal hears the approval. If the write fails or times out, the terminal
    is told 96, the issuer gets a 0420, and the hold (if it committed) is voided."""
    led = sw.ledger
    if led is None or ctx.onus is not None or ctx.outbound is None or ctx.response is None:
        return
    req = ctx.request
    link = ctx.route.link
    if ctx.response.response_code != "00":
        try:
            await led.declined(ctx.dup_key, req, link, ctx.response.response_code or "")
        except LedgerUnavailable as e:  # events only: the answer stands
            log("ledger_events_failed", logging.ERROR, error=str(e), stan=req.stan)
        return
    if not led.holds_money(req):
        return
    try:
        await led.hold_offus(ctx.dup_key, req, link, ctx.response.auth_code)
    except LedgerUnavailable:
        ctx.saf.append(reversal_item(ctx.outbound, link))
        void_unknown_hold(sw, ctx)
        raise


async def locate_original(sw: Switch, ctx: Context) -> None:
    """Find the transaction a reversal refers to: DE90 when present, else same STAN/DE7.

    An original still in flight is waited for (bounded, as a duplicate waits: 91 after
    duplicate_wait_ms): answering 00 before its outcome is known would let an approval
    that comes later stand, unreversed."""
    req = ctx.request
    od = req.original_data or ""
    stan, when = (od[4:10], od[10:20]) if len(od) >= 20 else (req.stan, req.transmission_time)
    mtis = ("0100", "0101", "0200", "0201")
    orig = await sw.store.find_original(ctx.source, stan or "", when or "", mtis)
    if orig is None:
        raise OriginalNotFound("no original for this reversal")
    if orig.response is None:
        await _wait_for_original(sw, orig.dup_key)
        orig = await sw.store.find_original(ctx.source, stan or "", when or "", mtis)
    ctx.original = orig


async def match_original(sw: Switch, ctx: Context) -> None:
    """A reversal is the original's, not what the terminal put in it: its DE4 must be
    the original's amount (13 otherwise) and its card the original's (25 otherwise);
    refused, nothing is reversed or voided. The card is compared with the original's
    PAN decrypted from the journal (HSM); without a stored PAN (no [hsm], or an on-us
    original) with the original's masked PAN. A reversal without DE2 goes out, and is
    stored for SAF, with the original's PAN."""
    req, orig = ctx.request, ctx.original
    received = orig.request or orig.issuer_request or {}
    amount = received.get("amount_minor")
    if req.amount_minor is not None and amount is not None and req.amount_minor != amount:
        raise ReversalAmountMismatch("reversal amount is not its original's")
    theirs = pan_of(req)
    pan = await sw.stored_pan(orig.pan_enc, orig.dup_key, stan=req.stan)
    if pan is not None:
        if theirs and theirs != pan:
            raise ReversalCardMismatch("reversal card is not its original's")
        ctx.original_pan = pan
        if ctx.pan_prot is None:  # stored with the reversal's rows, for its 0420
            ctx.pan_prot = await sw.protect_pan(ctx, pan)
        return
    masked = received.get("pan_masked")
    if theirs and masked and mask_pan(theirs) != masked:
        raise ReversalCardMismatch("reversal card is not its original's")


def _needs_reversal(orig: Original) -> bool:
    """Only an approval the issuer gave needs reversing: a 91 (timeout) was reversed by
    the switch already, and a decline holds nothing."""
    return (orig.issuer_request is not None and orig.response is not None
            and orig.response.get("response_code") in APPROVAL_CODES)


async def forward_reversal(sw: Switch, ctx: Context) -> None:
    orig = ctx.original
    if not _needs_reversal(orig):
        ctx.response = respond(ctx.request, "00")
        return
    first = message_from_safe(orig.issuer_request)
    link = sw.links[orig.link]
    ctx.reversal_of = orig.dup_key  # one reversal per original (switch_reversal)
    if link.state != "signed_on":
        # Not lost: the reversal goes out by store-and-forward when the link is back.
        ctx.saf.append(reversal_item(first, link.name))
        ctx.response = respond(ctx.request, "00", rrn=first.rrn)
        return
    out = first.replace(mti="0400", pan=ctx.original_pan or ctx.request.pan,
                        stan=link.next_stan(),
                        transmission_time=transmission_time(),
                        original_data=original_data(first), auth_code=None,
                        response_code=None, additional_amounts=None)
    try:
        resp = await _exchange(sw, ctx, link, out)
    except (LinkUnavailable, LinkBusy):
        # Nothing sent, but this request holds the original's one reversal: it must not
        # be lost, so it goes by store-and-forward, as when the link is down.
        ctx.saf.append(reversal_item(first, link.name))
        ctx.response = respond(ctx.request, "00", rrn=first.rrn)
        return
    except IssuerTimeout as e:
        # Sent, outcome unknown: _exchange queued the 0420 (DE90 = the original), so
        # the reversal is decided and the switch owns its delivery. The terminal is
        # told 91 as before (issuer did not answer), but the pipeline goes on:
        # void_ledger voids the hold (it used to stay pending: issue 9).
        ctx.error = f"{type(e).__name__}: {e}"
        ctx.response = respond(ctx.request, response_code_for(e), rrn=first.rrn)
        return
    if resp is None:  # reversed already by another request: nothing sent
        ctx.response = respond(ctx.request, "00", rrn=first.rrn)
        return
    ctx.response = respond(ctx.request, resp.response_code or "96", rrn=first.rrn)


async def store_reversal(sw: Switch, ctx: Context) -> None:
    """A terminal's 0420: stored durably (with the answer, one transaction), then acked."""
    orig = ctx.original
    if _needs_reversal(orig):
        first = message_from_safe(orig.issuer_request)
        ctx.reversal_of = orig.dup_key  # queued only if the first reversal (complete)
        ctx.saf.append(reversal_item(first, orig.link))
    ctx.response = respond(ctx.request, "00")


async def store_advice(sw: Switch, ctx: Context) -> None:
    """0120/0220: stored for forwarding (safe fields only: see README), then acked."""
    if ctx.onus is not None:  # the switch is the issuer: nothing to forward
        ctx.response = respond(ctx.request, "00")
        return
    fields = safe_fields(ctx.request)
    for name in ("pan_masked", "mti", "stan", "transmission_time"):
        fields.pop(name, None)
    fields["acquirer_id"] = ctx.request.acquirer_id or sw.cfg.switch.institution_id
    ctx.saf.append(SafItem(link=ctx.route.link, mti=ctx.request.mti[:3] + "0",
                           message=fields))
    ctx.response = respond(ctx.request, "00")


async def void_ledger(sw: Switch, ctx: Context) -> None:
    """Void the pending hold of the reversed original (on-us or off-us). A failed void is
    retried in the background (same ids); the reversal's answer stands."""
    led, orig = sw.ledger, ctx.original
    if led is None or orig is None or (orig.response or {}).get("response_code") != "00":
        return
    try:
        result = await led.void(orig.dup_key, "reversal")
    except LedgerUnavailable as e:
        log("ledger_void_failed", logging.ERROR, error=str(e), retry="in background")
        led.void_later(orig.dup_key)
        return
    log("ledger_voided", result=result, stan=ctx.request.stan)


async def post_completion(sw: Switch, ctx: Context) -> None:
    """On-us completion advice (0220): post the original's hold for DE4 (partial allowed,
    the rest released). Off-us completions go to the network as advices (store_advice)
    and their holds are posted at clearing."""
    if ctx.onus is None:
        return
    await locate_original(sw, ctx)
    await sw.ledger.complete(ctx.original.dup_key, ctx.request.amount_minor or 0)
    ctx.response = respond(ctx.request, "00")


# Message class (first three MTI digits) -> participants. Repeats (xx1) share them.
PIPELINES: dict[str, tuple[Step, ...]] = {
    "010": (check_mac, check_transaction, check_duplicate, check_onus, translate_pin,
            score_risk, route, forward, post_ledger),
    "020": (check_mac, check_transaction, check_duplicate, check_onus, translate_pin,
            score_risk, route, forward, post_ledger),
    "012": (check_mac, check_duplicate, check_onus, route, store_advice),
    "022": (check_mac, check_duplicate, check_onus, route, store_advice, post_completion),
    "040": (check_mac, check_duplicate, locate_original, match_original, forward_reversal,
            void_ledger),
    "042": (check_mac, check_duplicate, locate_original, match_original, store_reversal,
            void_ledger),
}
