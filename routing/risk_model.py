"""The fraud model: LightGBM gradient-boosted trees over ``risk_features.FEATURES``.

Training (``train``) uses LightGBM itself. Serving scores with the same trees compiled
to one Python function (``CompiledTrees``): LightGBM's own ``Booster.predict`` costs
about 40-50 µs a row from Python (argument checks, numpy conversion, the C call)
against about 15-25 µs for the compiled walk on the same trees (``python -m
benchmarks.run risk`` measures both in the same run; tests check that the two agree
to 1e-9 on every row). The reasons of a decision that is not a plain approve come
from path attribution over the same compiled trees (tens of µs); LightGBM's
``pred_contrib`` (SHAP values) gives a similar ranking at ~400 µs a row, too slow for
the authorization path (the benchmark reports both and how often they agree).

The model file is LightGBM's text format, built by ``payswitch risk train``; it is
not kept in git.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from payswitch.routing.risk_features import CATEGORICAL, FEATURES


class ModelError(Exception):
    """The model file is missing, unreadable or was built for other features."""


@dataclass(frozen=True, slots=True)
class TrainParams:
    rounds: int = 150
    leaves: int = 15
    learning_rate: float = 0.1
    min_data_in_leaf: int = 40


def train(rows: Sequence[Sequence[float]], labels: Sequence[int], seed: int,
          params: TrainParams | None = None) -> lgb.Booster:
    """A binary classifier (1 = fraud). Single-threaded and deterministic for a seed."""
    p = params or TrainParams()
    data = lgb.Dataset(np.asarray(rows, dtype=np.float64), np.asarray(labels),
                       feature_name=list(FEATURES),
                       categorical_feature=[FEATURES.index(c) for c in CATEGORICAL])
    return lgb.train({
        "objective": "binary", "learning_rate": p.learning_rate, "num_leaves": p.leaves,
        "min_data_in_leaf": p.min_data_in_leaf, "seed": seed, "deterministic": True,
        # fraud is rare: without these a pure leaf gets a log-odds of hundreds, and one
        # odd good row scores 999
        "lambda_l2": 1.0, "min_sum_hessian_in_leaf": 1.0, "feature_fraction": 0.9,
        "force_row_wise": True, "num_threads": 1, "verbose": -1,
    }, data, num_boost_round=p.rounds)


def score_of(probability: float) -> int:
    """Probability of fraud -> the 0-999 score decisions and thresholds use."""
    return min(999, max(0, int(probability * 1000)))


class RiskModel:
    """A trained booster plus its compiled walker; ``score(row)`` is the hot path."""

    def __init__(self, booster: lgb.Booster) -> None:
        if tuple(booster.feature_name()) != FEATURES:
            raise ModelError("model was trained on other features; retrain it "
                             "(payswitch risk train)")
        self.booster = booster
        self.trees = CompiledTrees(booster.dump_model())

    @classmethod
    def load(cls, path: str | Path) -> RiskModel:
        try:
            return cls(lgb.Booster(model_file=str(path)))
        except lgb.basic.LightGBMError as e:
            raise ModelError(f"cannot load risk model {path}: {e}") from None

    def probability(self, row: Sequence[float]) -> float:
        raw = self.trees.raw(row)
        if raw >= 0:  # the two halves keep exp() from overflowing
            return 1.0 / (1.0 + math.exp(-raw))
        e = math.exp(raw)
        return e / (1.0 + e)

    def score(self, row: Sequence[float]) -> int:
        return score_of(self.probability(row))

    def score_lightgbm(self, row: Sequence[float]) -> int:
        """The same score through LightGBM's predictor (the benchmark's comparison)."""
        x = np.asarray([row], dtype=np.float64)
        return score_of(float(self.booster.predict(x, num_threads=1)[0]))

    def top_contributions(self, row: Sequence[float], k: int = 3) -> list[tuple[str, float]]:
        """The k features that pushed this score up most (log-odds), by path attribution
        over the compiled trees: each split on the row's path credits its feature with
        the change of the node value (Saabas). Exact: they add up to the raw score."""
        return _top(self.trees.contributions(row), k)

    def shap_contributions(self, row: Sequence[float], k: int = 3) -> list[tuple[str, float]]:
        """The same from LightGBM's ``pred_contrib`` (SHAP values): ~10x the cost; the
        benchmark reports how often its top feature is the path attribution's."""
        x = np.asarray([row], dtype=np.float64)
        return _top(list(self.booster.predict(x, pred_contrib=True, num_threads=1)[0]), k)


def _top(contrib: list[float], k: int) -> list[tuple[str, float]]:
    # reverse=True keeps equal contributions in feature order, as sorting on -c did
    order = sorted(range(len(FEATURES)), key=contrib.__getitem__, reverse=True)[:k]
    return [(FEATURES[i], round(float(contrib[i]), 3)) for i in order if contrib[i] > 0]


class CompiledTrees:
    """LightGBM's trees (its ``dump_model`` JSON) as one generated Python function.

    Only numbers from the dump reach the generated source (each passed through
    ``float``/``int``), so a model file cannot inject code. Split semantics follow
    LightGBM's tree.h: numeric ``<=`` with the node's missing-value rule (NaN, Zero,
    None), categorical membership with negative or NaN values sent right.
    """

    def __init__(self, dump: dict) -> None:
        self.n_features = len(dump["feature_names"])
        # locals x0, x1, ... are read faster than x[i]: about half the cost of a walk
        unpack = "    " + "".join(f"x{i}, " for i in range(self.n_features)) + "= x"
        raw = ["def raw(x):", unpack, "    s = 0.0"]
        # c0, c1, ...: one local per feature, then the bias (locals again: a list's
        # c[i] += v costs about twice as much; the additions and their order are the same)
        slots = [f"c{i}" for i in range(self.n_features + 1)]
        contrib = ["def contrib(x):", unpack, "    " + " = ".join(slots) + " = 0.0"]
        for tree in dump["tree_info"]:
            root = tree["tree_structure"]
            raw += _emit(root, 1)
            bias = float(root.get("internal_value", root.get("leaf_value", 0.0)))
            contrib += [f"    c{self.n_features} += {bias!r}"] + _emit(root, 1, True)
        raw.append("    return s")
        contrib.append(f"    return [{', '.join(slots)}]")
        env: dict = {}
        # compiled from numbers only (see the class docstring): not user-supplied code
        exec(compile("\n".join(raw + contrib), "<risk-trees>", "exec"), env)  # noqa: S102
        self.raw = env["raw"]
        self._contrib = env["contrib"]
        self.n_trees = len(dump["tree_info"])

    def contributions(self, x: Sequence[float]) -> list[float]:
        """Per feature contribution to ``raw(x)``, then the bias; they sum to ``raw(x)``."""
        return self._contrib(x)


def _value(node: dict) -> float:
    return float(node["leaf_value"] if "leaf_value" in node else node["internal_value"])


def _emit(node: dict, depth: int, attribute: bool = False) -> list[str]:
    """Nested if/else for one tree: adds the leaf value to ``s``, or (``attribute``)
    each step's change of node value to ``c<feature>``."""
    pad = "    " * depth
    if "leaf_value" in node:
        return [f"{pad}pass"] if attribute else [f"{pad}s += {float(node['leaf_value'])!r}"]
    f = int(node["split_feature"])
    v = f"x{f}"
    if node["decision_type"] == "==":
        # categories are whole numbers; float membership is exact for them, and NaN or
        # a negative value is never in the set (LightGBM sends those right), except that
        # NaN reads as category 0 unless the node's missing type is NaN
        cats = {float(int(c)) for c in str(node["threshold"]).split("||")}
        cond = f"{v} in {cats!r}"
        if node["missing_type"] != "NaN" and 0.0 in cats:
            cond = f"({cond} or {v} != {v})"
    else:
        thr = float(node["threshold"])
        missing = node["missing_type"]
        # a comparison with NaN is False, so "not x > t" sends NaN left, "x <= t" right
        if missing == "NaN":
            nan_left = bool(node["default_left"])
        elif missing == "None":  # NaN is read as 0.0
            nan_left = thr >= 0.0
        else:  # Zero: NaN and 0 follow the default direction
            zero = f"({v} != {v} or -1e-35 <= {v} <= 1e-35)"
            nan_left = None
            cond = (f"({zero} or {v} <= {thr!r})" if node["default_left"]
                    else f"(not {zero} and {v} <= {thr!r})")
        if nan_left is not None:
            cond = f"not {v} > {thr!r}" if nan_left else f"{v} <= {thr!r}"
    here, left, right = _value(node), node["left_child"], node["right_child"]
    credit_left = [f"{pad}    c{f} += {_value(left) - here!r}"] if attribute else []
    credit_right = [f"{pad}    c{f} += {_value(right) - here!r}"] if attribute else []
    return ([f"{pad}if {cond}:"] + credit_left + _emit(left, depth + 1, attribute)
            + [f"{pad}else:"] + credit_right + _emit(right, depth + 1, attribute))
