"""The issuer's decisions, without I/O: request ``Message`` in, response ``Message`` out.

``Issuer.respond(msg)`` returns the response to send, or ``None`` when the issuer
stays silent (the ``no_answer`` card, responses themselves, unknown MTIs). The
network simulator (``network.py``) wraps this in sockets, framing, delays and faults.

With an ``Hsm`` holding the issuer keys (``devkeys.load_issuer_keys``) the issuer
checks the card for real, in this order, after "on file" and "in date":

1. CVV from track 2 (DE35): the iCVV (service code 999) when the card was read by
   chip (DE22 05x), else the CVV with the track's service code. Wrong: ``82``.
2. CVV2, when DE48 carries subelement 92 (Mastercard layout ``R9203ddd``, used on
   every network here; keyed entry). Wrong: ``N7``.
3. PIN, when DE52 is present: the block (under the link's ZPK) against the card's
   PVV (generated from its PIN with the PVK when the issuer starts, as at issuance).
   Wrong: ``55``; the ``pin_tries_max``-th wrong PIN in a row and any PIN after it:
   ``75`` (a right PIN before that resets the count).
4. The usual outcome (05, 51, ...).
5. ARQC, when DE55 carries one (9F26, ATC 9F36, UN 9F37, PSN from DE23, the CVN
   named by the IAD 9F10: Visa 10 / 18, Mastercard 16 / 17, and it must be the card's
   own, see ``cards.Card.cvn``): verified with MK-AC through the CVN's key path
   (hsm/emv.py); an ARPC (method 1, ARC = the answer's DE39) is returned in DE55 tag
   91 (ARPC || ARC). A wrong ARQC turns the answer
   into ``82`` (Visa: "negative CAM / iCVV result"), with no ARPC: the issuer does not
   authenticate itself to a card it could not authenticate.

Each HSM verdict on card data (CVV, iCVV, CVV2, a PIN block against the PVV) is
remembered by its whole input: the key label, the PAN and the value checked (for a PIN,
the encrypted block, which ISO format 0 makes the same for the same PIN, PAN and ZPK).
A repeat of something already checked gets the same verdict without another HSM round
trip; anything new (another CVV, another block, another key) is checked in the HSM.
ARQCs are never the same twice (ATC, unpredictable number) and are always checked.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
import random
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583 import Message
from payswitch.codecs.iso8583.mastercard import parse_de48
from payswitch.codecs.pan import luhn_ok
from payswitch.codecs.tlv import Tlv, as_tag, decode_tlv, encode_tlv
from payswitch.hsm import Hsm, HsmError, devkeys, emv
from payswitch.simulators.cards import BY_PAN, NO_ANSWER, Card, parse_track2, track2_cvv

# Fields an issuer echoes from request to response (ISO 8583:1987 practice).
ECHOED = (
    "pan", "processing_code", "amount_minor", "transmission_time", "stan", "local_time",
    "local_date", "acquirer_id", "forwarding_id", "rrn", "terminal_id", "merchant_id",
    "currency", "network_code", "original_data", "pos_entry_mode", "settlement_date",
)
AUTH_REQUESTS = {"0100", "0101", "0200", "0201"}
REVERSALS = {"0400", "0401", "0420", "0421"}
ADVICES = {"0120", "0121", "0220", "0221"}
NETWORK = {"0800", "0801"}
AUTH_CODES_KEPT = 10_000  # recent approvals remembered to answer duplicates the same
ADVICES_KEPT = 100_000  # stand-in advices remembered to apply each once
VERDICTS_KEPT = 10_000  # HSM verdicts on card data remembered (oldest dropped)


def response_to(msg: Message, code: str) -> Message:
    resp = Message(mti=msg.response_mti, response_code=code)
    for name in ECHOED:
        setattr(resp, name, getattr(msg, name))
    resp.header = msg.header
    return resp


def cvv2_of(msg: Message) -> str | None:
    """CVV2 from DE48 subelement 92 (Mastercard layout, used on every network here)."""
    if not msg.additional_data:
        return None
    try:
        _, subs = parse_de48(msg.additional_data)
    except CodecError:
        return None
    return subs.get("92")


class Issuer:
    def __init__(self, cards: Mapping[str, Card] | None = None, seed: int | None = None,
                 today: dt.date | None = None, hsm: Hsm | None = None) -> None:
        self.cards = dict(BY_PAN if cards is None else cards)
        self.arqc_by_cvn: Counter[int] = Counter()  # ARQCs checked, by cryptogram version
        self._rng = random.Random(seed)
        self._today = today
        self._auth_seq = itertools.count(1)
        # A duplicate or repeat (same PAN, STAN, DE7, amount) gets the same DE38 again.
        self._auth_codes: collections.OrderedDict[tuple, str] = collections.OrderedDict()
        self.hsm = hsm
        # network -> its ZPK versions (hsm.keyexchange.KeyRing), set by NetworkSimulator:
        # during a key change's grace period a PIN block under the old ZPK is accepted
        self.zpk_rings: dict[str, Any] = {}
        # PIN checks: ok, ok_old_key (a replaced ZPK in its grace period), wrong_pin (the
        # card keys a wrong PIN), failed (the right PIN did not verify: a key problem)
        self.pin_checks: Counter[str] = Counter()
        # stand-in advices applied, by DE90 (bounded): a repeat is not applied twice
        self.advices: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.pin_failures: dict[str, int] = {}  # PAN -> wrong PINs in a row
        # (check, key label, PAN, value checked, ...) -> the HSM's verdict, bounded
        self._verdicts: dict[tuple, bool] = {}
        # The card file's PVVs, made from the cards' PINs with the PVK, as at issuance.
        self.pvv = {} if hsm is None else {
            c.pan: hsm.generate_pvv_clear(devkeys.pvk(c.network), c.pan, c.pin)
            for c in self.cards.values() if c.network}

    def apply_advice(self, msg: Message) -> str:
        """An approval made for this issuer while it was away (a switch's stand-in
        0120/0220 with DE39 00): taken off the card's balance once, however often it is
        repeated (0121) -- keyed by DE90, the original's identifiers. Always 00: the
        advice is acknowledged (0130), a repeat too."""
        if msg.response_code != "00":
            return "00"
        key = msg.original_data or f"{msg.stan}|{msg.transmission_time}|{msg.acquirer_id}"
        if key in self.advices:
            return "00"
        self.advices[key] = msg.amount_minor or 0
        while len(self.advices) > ADVICES_KEPT:
            self.advices.popitem(last=False)
        card = self.cards.get(self.pan_of(msg) or "")
        if card is not None:
            self.cards[card.pan] = dataclasses.replace(
                card, balance_minor=card.balance_minor - (msg.amount_minor or 0))
        return "00"

    def today(self) -> dt.date:
        return self._today or dt.datetime.now(dt.UTC).date()

    def respond(self, msg: Message) -> Message | None:
        if not msg.is_request:
            return None
        if msg.mti in NETWORK:
            return response_to(msg, "00")
        if msg.mti in ADVICES:
            return response_to(msg, self.apply_advice(msg))
        if msg.mti in REVERSALS:
            return response_to(msg, "00")
        if msg.mti not in AUTH_REQUESTS:
            return response_to(msg, "12")  # invalid transaction
        code = self.decide(msg)
        if code is None:
            return None
        de55 = None
        if self.hsm is not None and msg.emv and code not in ("14", "30"):
            code, de55 = self.check_arqc(msg, code)
        resp = response_to(msg, code)
        resp.emv = de55
        if code == "00":
            resp.auth_code = self.auth_code_for(msg)
            if (msg.processing_code or "").startswith("31"):  # balance inquiry
                card = self.cards.get(self.pan_of(msg) or "")
                balance = card.balance_minor if card else 0
                cur = msg.currency or "840"
                # DE54: account type 00, amount type 02 (available), currency, C, 12 digits
                resp.additional_amounts = f"0002{cur}C{balance:012d}"
        return resp

    @staticmethod
    def pan_of(msg: Message) -> str | None:
        if msg.pan:
            return msg.pan
        t2 = parse_track2(msg.track2) if msg.track2 else None
        return t2[0] if t2 else None

    @staticmethod
    def expiry_of(msg: Message) -> str | None:
        if msg.expiry:
            return msg.expiry
        t2 = parse_track2(msg.track2) if msg.track2 else None
        return t2[1] if t2 else None

    def decide(self, msg: Message) -> str | None:
        """The DE39 for an authorization or financial request; None = no answer."""
        pan = self.pan_of(msg)
        if not pan or not luhn_ok(pan):
            return "14"
        card = self.cards.get(pan)
        if card is None:
            return "14"  # no such account at this issuer
        if card.outcome == NO_ANSWER:
            return None
        expiry = self.expiry_of(msg)
        today = self.today()
        if expiry is None or not expiry.isdigit() or int(expiry[2:]) not in range(1, 13):
            return "54" if card.outcome == "54" else "30"
        if int(expiry) < (today.year % 100) * 100 + today.month:
            return "54"
        if self.hsm is not None and card.network:
            code = self.check_card(msg, card, pan, expiry)
            if code is not None:
                return code
            if card.outcome in ("55", "75", "82", "N7"):  # labels only without an HSM
                return "00" if (msg.amount_minor or 0) <= card.balance_minor else "51"
        if card.outcome not in ("00", "51"):
            return card.outcome
        amount = msg.amount_minor or 0
        if amount > card.balance_minor or card.outcome == "51":
            return "51"
        return "00"

    # -- checks with the HSM ----------------------------------------------------------
    def check_card(self, msg: Message, card: Card, pan: str, expiry: str) -> str | None:
        """CVV/iCVV, CVV2, PIN (see the module docstring): a decline code, or None."""
        hsm, net = self.hsm, card.network
        if msg.track2:
            t2 = parse_track2(msg.track2)
            cvv = track2_cvv(msg.track2)
            if t2 is None or cvv is None:
                return "82"
            cvk, chip = devkeys.cvk(net), (msg.pos_entry_mode or "").startswith("05")
            if chip and not self.verdict(("icvv", cvk, pan, t2[1], cvv),
                                         lambda: hsm.verify_icvv(cvk, pan, t2[1], cvv)):
                return "82"
            if not chip and not self.verdict(
                    ("cvv", cvk, pan, t2[1], t2[2], cvv),
                    lambda: hsm.verify_cvv(cvk, pan, t2[1], t2[2], cvv)):
                return "82"
        cvv2 = cvv2_of(msg)
        if cvv2 is not None and not self.verdict(
                ("cvv2", devkeys.cvk(net), pan, expiry, cvv2),
                lambda: hsm.verify_cvv2(devkeys.cvk(net), pan, expiry, cvv2)):
            return "N7"
        if msg.pin_block is not None:
            failures = self.pin_failures.get(pan, 0)
            limit = card.pin_tries_max
            if limit is not None and failures >= limit:
                return "75"
            ring = self.zpk_rings.get(net)
            ok = False
            for zpk in ring.accepted() if ring else [devkeys.zpk(net)]:
                ok = self.verdict(("pin", zpk, pan, bytes(msg.pin_block), self.pvv[pan]),
                                  lambda zpk=zpk: self._verify_pin(msg.pin_block, pan, zpk,
                                                                   net))
                if ok:
                    break
            if ring and ok and zpk != ring.current:
                self.pin_checks["ok_old_key"] += 1
            self.pin_checks["ok" if ok else "wrong_pin" if card.wrong == "pin" else "failed"] += 1
            if not ok:
                self.pin_failures[pan] = failures + 1
                return "75" if limit is not None and failures + 1 >= limit else "55"
            self.pin_failures.pop(pan, None)
        return None

    def _verify_pin(self, pin_block: bytes, pan: str, zpk: str, net: str) -> bool:
        try:
            return self.hsm.verify_pin_pvv(pin_block, pan, zpk, devkeys.pvk(net),
                                           self.pvv[pan])
        except HsmError:  # a block that does not decrypt under this ZPK
            return False

    def verdict(self, key: tuple, check: Callable[[], bool]) -> bool:
        """The HSM's verdict on ``key`` (its whole input): remembered, so a repeat of the
        same card data or PIN block costs no HSM round trip (module docstring)."""
        ok = self._verdicts.get(key)
        if ok is None:
            ok = self._verdicts[key] = bool(check())
            if len(self._verdicts) > VERDICTS_KEPT:
                del self._verdicts[next(iter(self._verdicts))]
        return ok

    def check_arqc(self, msg: Message, code: str) -> tuple[str, bytes | None]:
        """(DE39, response DE55 with tag 91) after verifying the ARQC in DE55."""
        pan = self.pan_of(msg) or ""
        card = self.cards.get(pan)
        if card is None or not card.network:
            return code, None
        try:
            tags = {t.tag_hex: t.value for t in decode_tlv(msg.emv)}
            cvn = emv.cvn_of(tags)
            if cvn != card.cvn:  # the issuer knows the card's profile: no downgrade
                return "82", None
            psn = (msg.card_sequence or "000")[-2:]
            self.arqc_by_cvn[cvn] += 1
            ok, arpc = self.hsm.verify_arqc(
                devkeys.mkac(card.network), pan, psn, emv.atc_of(tags),
                emv.arqc_input(tags, cvn), tags.get("9F26", b""), arc=code.encode()[:2],
                cvn=cvn, un=tags.get("9F37"))
        except (CodecError, HsmError):
            return "82", None
        if not ok:
            return "82", None
        return code, encode_tlv([Tlv(as_tag("91"), arpc + code.encode()[:2])])

    def auth_code_for(self, msg: Message) -> str:
        key = (self.pan_of(msg), msg.stan, msg.transmission_time, msg.amount_minor)
        code = self._auth_codes.get(key)
        if code is None:
            code = self._auth_codes[key] = self.auth_code()
            if len(self._auth_codes) > AUTH_CODES_KEPT:
                self._auth_codes.popitem(last=False)
        return code

    def auth_code(self) -> str:
        return f"{next(self._auth_seq) % 1_000_000:06d}"
