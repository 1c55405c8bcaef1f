"""Stand-in decisions: the switch authorizes for an issuer it cannot reach. No I/O.

``decide(params, usage, request)`` applies the issuer's stand-in parameters from
config: per-card daily count and amount, maximum single amount, allowed processing
codes and MCCs, a risk score ceiling, and whether the card checks the switch could do
with the issuer's keys (PVV, CVV/iCVV, ARQC) passed. Anything outside them is DE39 91
(issuer unavailable). An approval is counted in ``StandInUsage`` (bounded, per UTC day,
the day passed in) so the next request sees it; the caller then holds it in the
ledger, marks it stand-in and queues its 0120 advice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

APPROVED, ISSUER_UNAVAILABLE = "00", "91"
DAY_MS = 86_400_000
# card check -> the config key of the issuer key it needs (a label in the switch's HSM)
CHECK_KEYS = {"pvv": "pvk", "cvv": "cvk", "arqc": "mkac"}


class StandInConfigError(ValueError):
    """Bad stand-in parameters; the message starts with the offending key."""


@dataclass(frozen=True, slots=True)
class StandInParams:
    max_daily_count: int = 3
    max_daily_amount_minor: int = 20_000
    max_single_amount_minor: int = 10_000
    processing_codes: frozenset[str] = frozenset({"00"})  # DE3 positions 1-2
    mccs: frozenset[str] | None = None  # None: any MCC
    max_risk_score: int = 500
    require_card_checks: bool = True  # PVV / CVV / ARQC verified with the issuer's keys
    # The card checks the issuer grants the switch, with its keys' labels in the
    # switch's HSM (shared by key ceremony): "pvv" (pvk), "cvv" (cvk), "arqc" (mkac).
    card_checks: frozenset[str] = frozenset()
    pvk: str = ""
    cvk: str = ""
    mkac: str = ""
    # DE39 of a failed CVV / iCVV / ARQC: "82" (Visa: negative CAM, dCVV, iCVV or CVV
    # results) or "05" (do not honour: what Mastercard answers). A wrong PIN is 55.
    check_decline_code: str = "82"

    @classmethod
    def from_dict(cls, d: Mapping, prefix: str) -> StandInParams:
        known = set(cls.__dataclass_fields__)
        for k in d:
            if k not in known:
                raise StandInConfigError(f"{prefix}.{k}: unknown key")
        ints = {"max_daily_count": (0, 10_000), "max_daily_amount_minor": (0, 10**12),
                "max_single_amount_minor": (0, 10**12), "max_risk_score": (0, 999)}
        kw: dict = {}
        for k, (lo, hi) in ints.items():
            if k in d:
                v = d[k]
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise StandInConfigError(f"{prefix}.{k}: must be an integer in [{lo}, {hi}]")
                kw[k] = v
        for k, digits in (("processing_codes", 2), ("mccs", 4)):
            if k in d:
                v = d[k]
                if not isinstance(v, list) or not all(
                        isinstance(x, str) and len(x) == digits and x.isdigit() for x in v):
                    raise StandInConfigError(f"{prefix}.{k}: a list of {digits}-digit strings")
                kw[k] = frozenset(v)
        if "require_card_checks" in d:
            if not isinstance(d["require_card_checks"], bool):
                raise StandInConfigError(f"{prefix}.require_card_checks: true or false")
            kw["require_card_checks"] = d["require_card_checks"]
        kw.update(_card_checks(d, prefix))
        return cls(**kw)


def _card_checks(d: Mapping, prefix: str) -> dict:
    """``card_checks`` (a subset of CHECK_KEYS), each with its key label;
    ``check_decline_code`` "82" or "05"."""
    kw: dict = {}
    checks = d.get("card_checks", [])
    if not isinstance(checks, list) or not all(c in CHECK_KEYS for c in checks):
        raise StandInConfigError(
            f"{prefix}.card_checks: a list of {', '.join(sorted(CHECK_KEYS))}")
    kw["card_checks"] = frozenset(checks)
    for check, key in CHECK_KEYS.items():
        label = d.get(key, "")
        if not isinstance(label, str) or len(label) > 64:
            raise StandInConfigError(f"{prefix}.{key}: a key label (string)")
        if check in checks and not label:
            raise StandInConfigError(f"{prefix}.{key}: card check {check!r} needs its key label")
        if label and check not in checks:
            raise StandInConfigError(f"{prefix}.{key}: card check {check!r} is not granted")
        kw[key] = label
    code = d.get("check_decline_code", "82")
    if code not in ("82", "05"):
        raise StandInConfigError(f"{prefix}.check_decline_code: \"82\" or \"05\"")
    kw["check_decline_code"] = code
    return kw


@dataclass(frozen=True, slots=True)
class StandInRequest:
    card_token: str
    amount_minor: int
    processing_code: str
    mcc: str
    risk_score: int
    card_checks_ok: bool | None  # None: the switch could not check (no keys granted)
    now_ms: int


@dataclass(frozen=True, slots=True)
class StandInDecision:
    response_code: str  # "00" or "91"
    reason: str  # why, for the journal and events ("approved" or the limit hit)


class StandInUsage:
    """Per card, today's stand-in approvals: (day, count, amount). At most
    ``max_cards`` cards are kept (least recently used evicted first); an evicted card
    starts its day again, so keep the limit above one day's stand-in cards."""

    def __init__(self, max_cards: int = 100_000) -> None:
        if max_cards < 1:
            raise ValueError("max_cards must be >= 1")
        self.max_cards = max_cards
        self._by_card: OrderedDict[str, tuple[int, int, int]] = OrderedDict()

    def today(self, card_token: str, now_ms: int) -> tuple[int, int]:
        day, count, amount = self._by_card.get(card_token, (-1, 0, 0))
        return (count, amount) if day == now_ms // DAY_MS else (0, 0)

    def add(self, card_token: str, now_ms: int, amount_minor: int) -> None:
        count, amount = self.today(card_token, now_ms)
        self._by_card[card_token] = (now_ms // DAY_MS, count + 1, amount + amount_minor)
        self._by_card.move_to_end(card_token)
        while len(self._by_card) > self.max_cards:
            self._by_card.popitem(last=False)


def refusal(p: StandInParams, usage: StandInUsage, r: StandInRequest) -> str | None:
    """The first limit ``r`` is outside of, or None. Changes nothing."""
    count, amount = usage.today(r.card_token, r.now_ms)
    checks = (
        (r.processing_code[:2] in p.processing_codes, "processing_code"),
        (p.mccs is None or r.mcc in p.mccs, "mcc"),
        (r.amount_minor <= p.max_single_amount_minor, "max_single_amount"),
        (count + 1 <= p.max_daily_count, "max_daily_count"),
        (amount + r.amount_minor <= p.max_daily_amount_minor, "max_daily_amount"),
        (r.risk_score <= p.max_risk_score, "risk_score"),
        (r.card_checks_ok is True or not p.require_card_checks, "card_checks"),
    )
    return next((what for ok, what in checks if not ok), None)


def decide(p: StandInParams, usage: StandInUsage, r: StandInRequest) -> StandInDecision:
    what = refusal(p, usage, r)
    if what is not None:
        return StandInDecision(ISSUER_UNAVAILABLE, what)
    usage.add(r.card_token, r.now_ms, r.amount_minor)
    return StandInDecision(APPROVED, "approved")
