"""Risk configuration (rules, thresholds, shadow mode) and the rules themselves.

``RiskConfig.from_dict(toml["risk"])`` validates everything: an unknown key, a value
of the wrong type or a threshold out of range is refused with the key named
(``RiskConfigError("risk.rules.max_card_1h: ...")``). A config object is immutable;
reloading means building a new one and handing it to the scorer.

Each rule has a stable id (the reason kept with a decision) and reads one feature of
the row ``RiskState.features`` returned, so rules cost a few comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from payswitch.routing.risk_features import FEATURES, AuthInput

MAX_SCORE = 999


class RiskConfigError(ValueError):
    """Bad risk configuration; the message starts with the offending key."""


# id -> (config key, feature it reads, lowest allowed limit, highest allowed limit)
VELOCITY_RULES: dict[str, tuple[str, str, float, float]] = {
    "R01": ("max_amount_log", "amount_log", 0.0, 30.0),
    "R02": ("max_card_1m", "card_n_1m", 1, 10_000),
    "R03": ("max_card_1h", "card_n_1h", 1, 10_000),
    "R04": ("max_card_24h", "card_n_24h", 1, 100_000),
    "R05": ("max_card_countries_24h", "card_countries_24h", 1, 250),
    "R06": ("max_card_terminals_1h", "card_terminals_1h", 1, 10_000),
    "R07": ("max_card_small_1h", "card_small_1h", 1, 10_000),
    "R08": ("max_merchant_bin_cards_1h", "merchant_bin_cards_1h", 1, 100_000),
    "R09": ("max_merchant_small_1h", "merchant_small_1h", 1, 100_000),
    "R10": ("max_travel_kmh", "kmh_from_prev", 100.0, 40_000.0),
    "R11": ("max_card_cash_1h", "card_cash_1h", 1, 10_000),
    "R12": ("max_amount_z", "amount_z", 0.5, 50.0),
}
LIST_RULES = {"R20": "blocked_mccs", "R21": "blocked_countries", "R22": "blocked_cards"}
RULE_KEYS = {v[0] for v in VELOCITY_RULES.values()} | set(LIST_RULES.values()) | {
    "rule_score", "allowed_cards"}
_INDEX = {rid: FEATURES.index(v[1]) for rid, v in VELOCITY_RULES.items()}


def _number(key: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RiskConfigError(f"{key}: must be a number, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise RiskConfigError(f"{key}: {value} is out of range [{lo}, {hi}]")
    return float(value)


def _strings(key: str, value: object, digits: int | None) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RiskConfigError(f"{key}: must be a list of strings")
    if digits is not None:
        for v in value:
            if len(v) != digits or not v.isdigit():
                raise RiskConfigError(f"{key}: {v!r} is not {digits} digits")
    return frozenset(value)


def _path(key: str, value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise RiskConfigError(f"{key}: must be a file path")
    return value


def _known(prefix: str, table: Mapping, allowed: set[str]) -> None:
    if not isinstance(table, Mapping):
        raise RiskConfigError(f"{prefix}: must be a table")
    for k in table:
        if k not in allowed:
            raise RiskConfigError(f"{prefix}.{k}: unknown key")


def _terminal_modes(groups: object, prefix: str) -> tuple[tuple[str, bool], ...]:
    """``[risk.terminal_groups.<name>]``: ``terminals`` (DE41 prefixes, 1-8 characters)
    and ``mode``. A prefix in two groups is refused (which mode would win?)."""
    if not isinstance(groups, Mapping):
        raise RiskConfigError(f"{prefix}: must be a table")
    out: dict[str, bool] = {}
    for name, g in groups.items():
        where = f"{prefix}.{name}"
        _known(where, g, {"terminals", "mode"})
        terminals = g.get("terminals")
        if (not isinstance(terminals, list) or not terminals or not all(
                isinstance(t, str) and 1 <= len(t) <= 8 and t.isprintable() for t in terminals)):
            raise RiskConfigError(f"{where}.terminals: a non-empty list of DE41 prefixes "
                                  "(1-8 characters)")
        if g.get("mode") not in ("enforce", "shadow"):
            raise RiskConfigError(f"{where}.mode: must be \"enforce\" or \"shadow\"")
        for t in terminals:
            if t in out:
                raise RiskConfigError(f"{where}.terminals: {t!r} is in another group")
            out[t] = g["mode"] == "shadow"
    return tuple(sorted(out.items(), key=lambda kv: -len(kv[0])))


@dataclass(frozen=True, slots=True)
class Rules:
    limits: dict[str, float] = field(default_factory=dict)  # rule id -> limit
    blocked_mccs: frozenset[str] = frozenset()
    blocked_countries: frozenset[str] = frozenset()
    blocked_cards: frozenset[str] = frozenset()
    allowed_cards: frozenset[str] = frozenset()
    rule_score: int = 900  # the score a velocity rule hit gives; list hits give 999

    @classmethod
    def from_dict(cls, d: Mapping, prefix: str = "risk.rules") -> Rules:
        _known(prefix, d, RULE_KEYS)
        limits = {}
        for rid, (key, _feature, lo, hi) in VELOCITY_RULES.items():
            if key in d:
                limits[rid] = _number(f"{prefix}.{key}", d[key], lo, hi)
        return cls(
            limits=limits,
            blocked_mccs=_strings(f"{prefix}.blocked_mccs", d.get("blocked_mccs", []), 4),
            blocked_countries=_strings(f"{prefix}.blocked_countries",
                                       d.get("blocked_countries", []), 3),
            blocked_cards=_strings(f"{prefix}.blocked_cards", d.get("blocked_cards", []), None),
            allowed_cards=_strings(f"{prefix}.allowed_cards", d.get("allowed_cards", []), None),
            rule_score=int(_number(f"{prefix}.rule_score", d.get("rule_score", 900), 0,
                                   MAX_SCORE)),
        )

    def evaluate(self, row: Sequence[float], a: AuthInput) -> tuple[int, tuple[str, ...]]:
        """(score 0-999 from rules, ids of the rules that fired)."""
        if a.card_token in self.allowed_cards:
            return 0, ()
        hits = [rid for rid, limit in self.limits.items()
                if row[_INDEX[rid]] > limit]  # NaN > limit is False: no history, no hit
        listed = [rid for rid, hit in (("R20", a.mcc in self.blocked_mccs),
                                       ("R21", a.country in self.blocked_countries),
                                       ("R22", a.card_token in self.blocked_cards)) if hit]
        score = MAX_SCORE if listed else (self.rule_score if hits else 0)
        return score, tuple(listed + hits)


@dataclass(frozen=True, slots=True)
class Thresholds:
    decline: int = 800  # score >= decline -> decline
    refer: int = 600  # refer <= score < decline -> refer (to the issuer / review)
    decline_code: str = "59"  # DE39 for a risk decline: 59 suspected fraud, or 05

    @classmethod
    def from_dict(cls, d: Mapping, prefix: str, base: Thresholds | None = None) -> Thresholds:
        _known(prefix, d, {"decline", "refer", "decline_code"})
        b = base or cls()
        decline = int(_number(f"{prefix}.decline", d.get("decline", b.decline), 1, MAX_SCORE + 1))
        refer = int(_number(f"{prefix}.refer", d.get("refer", b.refer), 1, MAX_SCORE + 1))
        if refer > decline:
            raise RiskConfigError(f"{prefix}.refer: {refer} is above decline {decline}")
        code = d.get("decline_code", b.decline_code)
        if code not in ("59", "05"):
            raise RiskConfigError(f"{prefix}.decline_code: must be \"59\" or \"05\"")
        return cls(decline=decline, refer=refer, decline_code=code)


@dataclass(frozen=True, slots=True)
class RiskConfig:
    rules: Rules = field(default_factory=Rules)
    default: Thresholds = field(default_factory=Thresholds)
    by_issuer: dict[str, Thresholds] = field(default_factory=dict)
    by_mcc: dict[str, Thresholds] = field(default_factory=dict)
    shadow: bool = False  # score and record, never decline or refer
    use_model: bool = True
    reasons: int = 3  # top feature contributions kept with a non-approve
    model_file: str | None = None  # built by `payswitch risk train`; None: rules only decision
    # (DE41 prefix, shadow) per terminal group, longest prefix first: a group's mode
    # overrides ``mode`` for its terminals' requests
    terminal_modes: tuple[tuple[str, bool], ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping, prefix: str = "risk") -> RiskConfig:
        _known(prefix, d, {"rules", "thresholds", "issuers", "mccs", "mode", "use_model",
                           "reasons", "model_file", "terminal_groups"})
        mode = d.get("mode", "enforce")
        if mode not in ("enforce", "shadow"):
            raise RiskConfigError(f"{prefix}.mode: must be \"enforce\" or \"shadow\"")
        if not isinstance(d.get("use_model", True), bool):
            raise RiskConfigError(f"{prefix}.use_model: must be true or false")
        default = Thresholds.from_dict(d.get("thresholds", {}), f"{prefix}.thresholds")
        issuers = d.get("issuers", {})
        mccs = d.get("mccs", {})
        _known(f"{prefix}.issuers", issuers, set(issuers))
        _known(f"{prefix}.mccs", mccs, set(mccs))
        for m in mccs:
            if len(m) != 4 or not m.isdigit():
                raise RiskConfigError(f"{prefix}.mccs.{m}: an MCC is 4 digits")
        return cls(
            rules=Rules.from_dict(d.get("rules", {}), f"{prefix}.rules"),
            default=default,
            by_issuer={k: Thresholds.from_dict(v, f"{prefix}.issuers.{k}", default)
                       for k, v in issuers.items()},
            by_mcc={k: Thresholds.from_dict(v, f"{prefix}.mccs.{k}", default)
                    for k, v in mccs.items()},
            shadow=mode == "shadow", use_model=d.get("use_model", True),
            reasons=int(_number(f"{prefix}.reasons", d.get("reasons", 3), 0, len(FEATURES))),
            model_file=_path(f"{prefix}.model_file", d.get("model_file")),
            terminal_modes=_terminal_modes(d.get("terminal_groups", {}),
                                           f"{prefix}.terminal_groups"),
        )

    def shadow_for(self, terminal_id: str) -> bool:
        """Shadow mode for this terminal: its group's mode, else ``mode``."""
        for tid_prefix, shadow in self.terminal_modes:
            if terminal_id.startswith(tid_prefix):
                return shadow
        return self.shadow

    def thresholds(self, issuer: str, mcc: str) -> Thresholds:
        """The strictest of the default, the issuer's and the MCC's thresholds; the
        decline code is always the issuer's choice."""
        issuer_t = self.by_issuer.get(issuer, self.default)
        mcc_t = self.by_mcc.get(mcc, issuer_t)
        return Thresholds(decline=min(issuer_t.decline, mcc_t.decline),
                          refer=min(issuer_t.refer, mcc_t.refer),
                          decline_code=issuer_t.decline_code)
