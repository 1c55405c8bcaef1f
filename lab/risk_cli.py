"""`payswitch risk train`: the fraud model from the project's own fraud simulator.

This module is the thin adapter between ``simulators.fraud`` (plain records, labels
kept apart) and ``routing.risk_*`` (features, model): it lives in lab/ because only
lab/ may import both. ``featurize`` is the one path from records to feature rows,
used by training, the tests and ``benchmarks/risk.py``; serving reads the same
``RiskState.features``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from payswitch.routing.risk_features import AuthInput, Limits, RiskState, entry_mode_of
from payswitch.simulators.fraud import CardAuth, Simulation, simulate

if TYPE_CHECKING:  # lightgbm is imported when training, not by every `payswitch` command
    from payswitch.routing.risk_model import TrainParams

TRAIN_CARDS = 8000
TRAIN_DAYS = 6
# twice the test traffic's fraud share: more examples of the rarer patterns; thresholds
# are set on validation traffic, so the shifted prior does not leak into decisions
TRAIN_FRAUD_RATE = 0.02


def card_token(pan: str) -> str:
    """Stands in for the switch's HSM PAN token: stable, one-way, never the PAN."""
    return hashlib.sha256(pan.encode()).hexdigest()[:24]


def auth_input(rec: CardAuth) -> AuthInput:
    return AuthInput(
        at_ms=rec.at_ms, card_token=card_token(rec.pan), bin6=rec.pan[:6],
        amount_minor=rec.amount_minor, mcc=rec.mcc, merchant_id=rec.merchant_id,
        terminal_id=rec.terminal_id, country=rec.country, lat=rec.lat, lon=rec.lon,
        entry_mode=entry_mode_of(rec.pos_entry_mode),
        is_cash=rec.processing_code[:2] == "01")


def featurize(sim: Simulation, limits: Limits | None = None
              ) -> tuple[list[tuple[float, ...]], list[AuthInput]]:
    """Feature rows in time order, each read before its authorization is observed,
    exactly as the switch would."""
    state = RiskState(limits)
    rows, inputs = [], []
    for rec in sim.auths:
        a = auth_input(rec)
        rows.append(state.features(a))
        state.observe(a)
        inputs.append(a)
    return rows, inputs


def train_on_simulation(seed: int, cards: int = TRAIN_CARDS, days: int = TRAIN_DAYS,
                        params: TrainParams | None = None,
                        fraud_rate: float = TRAIN_FRAUD_RATE):
    """Simulate, featurize, train on every day but the warm-up day 0."""
    from payswitch.routing.risk_model import train
    sim = simulate(seed, cards=cards, days=days, fraud_rate=fraud_rate)
    rows, _ = featurize(sim)
    keep = [i for i in range(len(rows)) if sim.day_of(i) >= 1]
    return train([rows[i] for i in keep], [int(bool(sim.labels[i])) for i in keep],
                 seed=seed, params=params)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("risk", help="risk model: train")
    rsub = p.add_subparsers(dest="risk_command", required=True)
    t = rsub.add_parser("train", help="train the fraud model on simulated traffic")
    t.add_argument("--seed", type=int, required=True, help="simulator and trainer seed")
    t.add_argument("--out", type=Path, required=True, help="model file to write")
    t.add_argument("--cards", type=int, default=TRAIN_CARDS)
    t.add_argument("--days", type=int, default=TRAIN_DAYS)
    t.add_argument("--rounds", type=int, default=150, help="boosting rounds (trees)")
    t.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    if args.cards < 10 or args.days < 2 or args.rounds < 1:
        print("risk train: need --cards >= 10, --days >= 2, --rounds >= 1", file=sys.stderr)
        return 2
    from payswitch.routing.risk_model import TrainParams
    booster = train_on_simulation(args.seed, args.cards, args.days,
                                  TrainParams(rounds=args.rounds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(args.out))
    print(f"risk model: {booster.num_trees()} trees -> {args.out}")
    return 0
