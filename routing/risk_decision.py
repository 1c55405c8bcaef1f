"""One risk decision: features, rules, model, thresholds -> approve / decline / refer.

``RiskScorer.assess(auth, issuer)`` is what the switch's risk participant calls for
every 0100/0200 before it forwards or holds it. It reads the features, adds the
authorization to the state (declined ones too: attempts are what card testing looks
like), and returns a ``RiskDecision`` whose ``reasons`` (rule ids, then the model's top
feature contributions) go into the payment's events and journal row.

The score is the higher of the rules' and the model's. In shadow mode the decision is
always approve, and ``would`` keeps what enforcing would have done, so shadow figures
can be compared with the enforced ones before switching over.
"""

from __future__ import annotations

from dataclasses import dataclass

from payswitch.routing.risk_features import AuthInput, RiskState
from payswitch.routing.risk_model import RiskModel
from payswitch.routing.risk_rules import RiskConfig

APPROVE, DECLINE, REFER = "approve", "decline", "refer"


@dataclass(frozen=True, slots=True)
class RiskDecision:
    score: int  # 0-999
    action: str  # what the switch does: approve / decline / refer
    response_code: str | None  # DE39 when declined ("59" or "05"), else None
    reasons: tuple[str, ...]  # rule ids, then "feature:+contribution"
    would: str  # the action enforcing would take (== action unless shadow)
    shadow: bool
    rule_score: int
    model_score: int | None


class RiskScorer:
    def __init__(self, config: RiskConfig, state: RiskState,
                 model: RiskModel | None = None) -> None:
        self.config = config
        self.state = state
        self.model = model

    def reload(self, config: RiskConfig, model: RiskModel | None = None) -> None:
        """New rules and thresholds (and optionally a new model) for the next call; the
        state stays. A config object is immutable, so a swap is atomic for trio."""
        self.config = config
        if model is not None:
            self.model = model

    def assess(self, auth: AuthInput, issuer: str) -> RiskDecision:
        cfg = self.config
        row = self.state.features(auth)
        self.state.observe(auth)
        rule_score, hits = cfg.rules.evaluate(row, auth)
        model_score = None
        if cfg.use_model and self.model is not None:
            model_score = self.model.score(row)
        score = max(rule_score, model_score or 0)
        t = cfg.thresholds(issuer, auth.mcc)
        would = DECLINE if score >= t.decline else REFER if score >= t.refer else APPROVE
        reasons = hits
        if (self.model is not None and model_score is not None and model_score >= t.refer
                and cfg.reasons):
            # the model is a reason only when it alone would have stopped this one
            reasons += tuple(f"{name}:{value:+.2f}" for name, value
                             in self.model.top_contributions(row, cfg.reasons))
        shadow = cfg.shadow_for(auth.terminal_id)
        action = APPROVE if shadow else would
        return RiskDecision(
            score=score, action=action,
            response_code=t.decline_code if action == DECLINE else None,
            reasons=reasons, would=would, shadow=shadow, rule_score=rule_score,
            model_score=model_score)
