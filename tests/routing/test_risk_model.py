"""The model: compiled trees agree with LightGBM, the CLI builds a loadable model
deterministically, a model for other features is refused, the model separates fraud."""

import math

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.lab.cli import main as cli_main
from payswitch.lab.risk_cli import featurize, train_on_simulation
from payswitch.routing.risk_features import FEATURES
from payswitch.routing.risk_model import ModelError, RiskModel, TrainParams, train
from payswitch.simulators.fraud import simulate


@pytest.fixture(scope="module")
def model():
    return RiskModel(train_on_simulation(7, cards=800, days=3, params=TrainParams(rounds=40),
                                         fraud_rate=0.05))


@pytest.fixture(scope="module")
def held_out():
    sim = simulate(8, cards=800, days=3, fraud_rate=0.05)
    rows, _ = featurize(sim)
    return sim, rows


def test_compiled_trees_equal_lightgbm(model, held_out):
    _, rows = held_out
    x = np.asarray(rows, dtype=np.float64)
    want = model.booster.predict(x, raw_score=True, num_threads=1)
    got = [model.trees.raw(r) for r in rows]
    assert np.allclose(got, want, rtol=0, atol=1e-9)
    assert any(math.isnan(v) for r in rows for v in r)  # missing values were exercised


def test_model_scores_fraud_above_good(model, held_out):
    sim, rows = held_out
    days = [sim.day_of(i) for i in range(len(rows))]
    scores = [model.score(r) for r, d in zip(rows, days, strict=True) if d >= 1]
    labels = [lab for lab, d in zip(sim.labels, days, strict=True) if d >= 1]
    fraud = [s for s, lab in zip(scores, labels, strict=True) if lab]
    good = [s for s, lab in zip(scores, labels, strict=True) if not lab]
    assert np.median(fraud) > 500 > np.percentile(good, 99)


def test_contributions_name_features(model, held_out):
    sim, rows = held_out
    i = max(range(len(rows)), key=lambda k: model.score(rows[k]))
    top = model.top_contributions(rows[i], 3)
    assert 1 <= len(top) <= 3 and all(name in FEATURES and v > 0 for name, v in top)
    shap = model.shap_contributions(rows[i], 3)  # LightGBM's own pred_contrib
    assert {n for n, _ in top} & {n for n, _ in shap}


def test_model_for_other_features_is_refused(tmp_path):
    x = np.random.default_rng(0).random((200, 3))
    b = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1},
                  lgb.Dataset(x, (x[:, 0] > 0.5).astype(int)), num_boost_round=2)
    path = tmp_path / "other.txt"
    b.save_model(str(path))
    with pytest.raises(ModelError, match="other features"):
        RiskModel.load(path)
    with pytest.raises(ModelError):
        RiskModel.load(tmp_path / "missing.txt")


def test_risk_train_command_is_deterministic(tmp_path, capsys):
    args = ["risk", "train", "--seed", "3", "--cards", "200", "--days", "2", "--rounds", "5"]
    assert cli_main([*args, "--out", str(tmp_path / "a" / "m.txt")]) == 0
    assert cli_main([*args, "--out", str(tmp_path / "b.txt")]) == 0
    a, b = (tmp_path / "a" / "m.txt").read_text(), (tmp_path / "b.txt").read_text()
    assert a == b
    assert RiskModel.load(tmp_path / "b.txt").trees.n_trees == 5
    assert cli_main(["risk", "train", "--seed", "3", "--cards", "1", "--out",
                     str(tmp_path / "c.txt")]) == 2


def test_train_is_single_feature_order():
    with pytest.raises(Exception):  # noqa: B017 - lightgbm raises its own error type
        train([[0.0] * 3], [0], seed=1, params=TrainParams(rounds=1))


def test_path_contributions_add_up_to_the_raw_score(model, held_out):
    _, rows = held_out
    for r in rows[::50]:
        c = model.trees.contributions(r)
        assert math.isclose(sum(c), model.trees.raw(r), abs_tol=1e-9)


def test_compiled_trees_equal_lightgbm_on_odd_values(model, held_out):
    """NaN, zero and negative values in any feature, unseen and negative categories:
    every missing-value rule of LightGBM's tree walk is exercised."""
    _, rows = held_out
    rng = np.random.default_rng(3)
    odd = []
    for r in rows[:400]:
        r = list(r)
        for i in rng.choice(len(r), size=6, replace=False):
            r[i] = rng.choice([math.nan, 0.0, -1.0, 1e-40, 7777.0])
        odd.append(r)
    want = model.booster.predict(np.asarray(odd), raw_score=True, num_threads=1)
    assert np.allclose([model.trees.raw(r) for r in odd], want, rtol=0, atol=1e-9)


def _goes_left(node, x):
    """LightGBM's decision at one node (tree.h), written plainly: the reference the
    generated walk is held to."""
    v = x[node["split_feature"]]
    missing = node["missing_type"]
    if node["decision_type"] == "==":
        if math.isnan(v):
            if missing == "NaN":
                return False
            v = 0.0
        cats = {int(c) for c in str(node["threshold"]).split("||")}
        return v >= 0 and v == int(v) and int(v) in cats
    if math.isnan(v) and missing != "NaN":
        v = 0.0
    if missing == "Zero" and -1e-35 <= v <= 1e-35:
        return bool(node["default_left"])
    if math.isnan(v):
        return bool(node["default_left"])
    return v <= node["threshold"]


def _reference_contributions(dump, x):
    """Path attribution by walking the dump's nodes one by one, adding in the order the
    compiled code does: per tree its root value to the bias, then each step's change."""
    c = [0.0] * (len(FEATURES) + 1)
    for tree in dump["tree_info"]:
        node = tree["tree_structure"]
        c[-1] += float(node.get("internal_value", node.get("leaf_value", 0.0)))
        while "leaf_value" not in node:
            here = node["internal_value"]
            node_next = node["left_child"] if _goes_left(node, x) else node["right_child"]
            nxt = node_next.get("leaf_value", node_next.get("internal_value"))
            c[node["split_feature"]] += float(nxt) - float(here)
            node = node_next
    return c


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_compiled_contributions_equal_a_plain_walk_exactly(model, data):
    """The generated walk (locals, not a list) against a node-by-node walk of the dump:
    the same floats, bit for bit, on rows at and around the model's own thresholds."""
    dump = model.booster.dump_model()
    thresholds = sorted({float(t) for t in _numeric_thresholds(dump)})
    value = st.one_of(st.sampled_from([math.nan, 0.0, -1.0, 1e-40, 3.0, 7777.0]),
                      st.sampled_from(thresholds),
                      st.sampled_from(thresholds).map(lambda t: math.nextafter(t, math.inf)),
                      st.floats(-10, 1e5, allow_nan=False))
    x = data.draw(st.lists(value, min_size=len(FEATURES), max_size=len(FEATURES)))
    got = model.trees.contributions(x)
    assert got == _reference_contributions(dump, x)
    assert math.isclose(sum(got), model.trees.raw(x), abs_tol=1e-9)


def _numeric_thresholds(dump):
    stack = [t["tree_structure"] for t in dump["tree_info"]]
    while stack:
        node = stack.pop()
        if "leaf_value" in node:
            continue
        if node["decision_type"] != "==":
            yield node["threshold"]
        stack += [node["left_child"], node["right_child"]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0.0, -0.0, 0.5, 0.5, -0.2, 1.25, 3.0]),
                min_size=len(FEATURES) + 1, max_size=len(FEATURES) + 1), st.integers(0, 5))
def test_top_reasons_keep_ties_in_feature_order(contrib, k):
    from payswitch.routing.risk_model import _top

    order = sorted(range(len(FEATURES)), key=lambda i: -contrib[i])[:k]  # as it was
    want = [(FEATURES[i], round(float(contrib[i]), 3)) for i in order if contrib[i] > 0]
    assert _top(contrib, k) == want
