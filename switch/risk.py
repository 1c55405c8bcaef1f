"""The switch's risk engine: one ``RiskScorer`` (routing/risk_decision.py) over one
in-process ``RiskState``, its rules reloaded from the config file when it changes, and
the state rebuilt from the journal at start.

Why in-process and rebuilt from the journal: the state is a pure function of the last
24 h of scored authorizations in time order (routing/README.md, "State"), and the
switch is one process, so every card's windows live in exactly one place. Each scored
request journals its ``AuthInput`` (card token, never the PAN) on its ``risk_scored``
row; at start ``Store.risk_inputs`` streams the last 24 h of those rows and
``replay`` feeds them to ``observe``. Nothing else is persisted.
"""

from __future__ import annotations

import logging
import os
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from payswitch.codecs.iso8583.message import Message
from payswitch.routing.risk_decision import RiskDecision, RiskScorer
from payswitch.routing.risk_features import AuthInput, Limits, RiskState, entry_mode_of
from payswitch.routing.risk_rules import RiskConfig
from payswitch.switch.config import ConfigError, parse_risk
from payswitch.switch.logs import log

# AuthInput's fields, once: dataclasses.asdict copied each value recursively, ~20 µs a
# request for what is a dict of strings and numbers
_INPUT_FIELDS = tuple(f.name for f in fields(AuthInput))
RELOAD_CHECK_S = 1.0  # the config file's mtime is looked at most this often
CASH_PROCESSING = "01"


def _load_model(cfg: RiskConfig) -> Any:
    """The model named by ``risk.model_file`` (built by ``payswitch risk train``), or None
    when there is none or it is not used. A missing or foreign file is a config error."""
    if not cfg.use_model or not cfg.model_file:
        return None
    from payswitch.routing.risk_model import ModelError, RiskModel  # lightgbm: only here

    try:
        return RiskModel.load(cfg.model_file)
    except (OSError, ModelError) as e:
        raise ConfigError(f"risk.model_file: cannot load {cfg.model_file}: {e}") from None


def auth_input(req: Message, card_token: str, at_ms: int) -> AuthInput:
    """What the scorer reads of a 0100/0200 (no terminal location: the config has
    none yet, so the impossible-travel features stay NaN on the live path)."""
    pan = req.pan or ""
    return AuthInput(
        at_ms=at_ms, card_token=card_token, bin6=pan[:6],
        amount_minor=req.amount_minor or 0, mcc=req.mcc or "0000",
        merchant_id=req.merchant_id or "", terminal_id=req.terminal_id or "",
        country=req.acquirer_country or "", lat=None, lon=None,
        entry_mode=entry_mode_of(req.pos_entry_mode),
        is_cash=(req.processing_code or "")[:2] == CASH_PROCESSING)


class RiskEngine:
    """The scorer, its state and its reload. ``clock`` gives wall time in seconds (the
    features' hours are UTC); tests pass a fake."""

    def __init__(self, cfg: RiskConfig, path: str = "", limits: Limits | None = None,
                 clock: Callable[[], float] = time.time, use_de7: bool = False) -> None:
        self.path, self.clock, self.use_de7 = path, clock, use_de7
        self.scorer = RiskScorer(cfg, RiskState(limits), _load_model(cfg))
        self._mtime = self._stat()
        self._checked = clock()
        self.reloads = 0

    @property
    def config(self) -> RiskConfig:
        return self.scorer.config

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime if self.path else None
        except OSError:
            return None

    def maybe_reload(self) -> None:
        """Re-read ``[risk]`` when the file's mtime changed (looked at once per
        RELOAD_CHECK_S). A bad new config is logged and the running one kept."""
        now = self.clock()
        if not self.path or now - self._checked < RELOAD_CHECK_S:
            return
        self._checked = now
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            with open(self.path, "rb") as f:
                cfg = parse_risk(tomllib.load(f).get("risk", {}))
            model = _load_model(cfg) if cfg.model_file != self.config.model_file else None
        except (OSError, tomllib.TOMLDecodeError, ConfigError) as e:
            log("risk_reload_refused", logging.ERROR, error=str(e))
            return
        self.scorer.reload(cfg, model)
        self.reloads += 1
        log("risk_reloaded", shadow=cfg.shadow, decline=cfg.default.decline)

    def assess(self, auth: AuthInput, issuer: str) -> RiskDecision:
        self.maybe_reload()
        return self.scorer.assess(auth, issuer)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def at_ms(self, req: Message) -> int:
        """The authorization's time for the features: now, or (``use_de7``) its DE7
        in the year that puts it nearest to now."""
        now = self.now_ms()
        if not self.use_de7:
            return now
        return de7_ms(req.transmission_time, now) or now

    def replay(self, inputs: Iterable[Mapping[str, Any]]) -> int:
        """Feed journalled ``AuthInput`` dicts (oldest first) to the state; returns how
        many. Rows that do not fit (an older format) are skipped."""
        n = 0
        for d in inputs:
            try:
                self.scorer.state.observe(AuthInput(**d))
            except TypeError:
                continue
            n += 1
        return n


def de7_ms(de7: str | None, now_ms: int) -> int | None:
    """DE7 (MMDDhhmmss, UTC) as ms since the epoch, in the year nearest ``now_ms``;
    None when it is not a valid date and time."""
    if not de7 or len(de7) != 10 or not de7.isdigit():
        return None
    year = _year_of(now_ms)
    candidates = _DE7_CACHE.get((de7, year))
    if candidates is None:
        if len(_DE7_CACHE) >= DE7_CACHE_SIZE:
            _DE7_CACHE.clear()
        candidates = _DE7_CACHE[(de7, year)] = _de7_candidates(de7, year)
    best = None
    for ms in candidates:
        if best is None or abs(ms - now_ms) < abs(best - now_ms):
            best = ms
    return best


# With the DE7 clock every scored request converted its DE7 through three datetimes
# (~10 µs); a second's requests share one DE7, so the conversion is kept per (DE7,
# year) and the year per UTC year's span. The nearest candidate is still chosen per call.
DE7_CACHE_SIZE = 4096
_DE7_CACHE: dict[tuple[str, int], tuple[int, ...]] = {}
_YEAR = [0, 0, 0]  # [first ms, first ms of the next year, year]


def _year_of(now_ms: int) -> int:
    first, after, year = _YEAR
    if first <= now_ms < after:
        return year
    year = datetime.fromtimestamp(now_ms / 1000, UTC).year
    _YEAR[:] = [int(datetime(year, 1, 1, tzinfo=UTC).timestamp() * 1000),
                int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp() * 1000), year]
    return year


def _de7_candidates(de7: str, year: int) -> tuple[int, ...]:
    """DE7 as ms in the year before, the year and the year after (those where it is a
    valid date), in that order."""
    out = []
    for y in (year - 1, year, year + 1):
        try:
            t = datetime(y, int(de7[:2]), int(de7[2:4]), int(de7[4:6]), int(de7[6:8]),
                         int(de7[8:]), tzinfo=UTC)
        except ValueError:
            continue
        out.append(int(t.timestamp() * 1000))
    return tuple(out)


def journal_fields(d: RiskDecision, auth: AuthInput) -> dict[str, Any]:
    """The ``risk_scored`` journal row: the decision, its reasons, and the input the
    state is rebuilt from at start."""
    return {"score": d.score, "action": d.action, "would": d.would, "shadow": d.shadow,
            "reasons": list(d.reasons), "rule_score": d.rule_score,
            "model_score": d.model_score, "decline_code": d.response_code,
            "input": {name: getattr(auth, name) for name in _INPUT_FIELDS}}
