"""The fraud simulator: deterministic, labelled apart, every pattern, imports kept narrow."""

import ast
import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from payswitch.codecs.pan import luhn_ok
from payswitch.simulators import fraud
from payswitch.simulators.fraud import PATTERNS, CardAuth, simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(11, cards=400, days=3, fraud_rate=0.02)


def test_same_seed_same_traffic_other_seed_other_traffic(sim):
    again = simulate(11, cards=400, days=3, fraud_rate=0.02)
    assert again.auths == sim.auths and again.labels == sim.labels
    assert simulate(12, cards=400, days=3, fraud_rate=0.02).auths != sim.auths


def test_labels_stay_apart_and_every_pattern_is_injected(sim):
    assert "label" not in {f.name for f in dataclasses.fields(CardAuth)}
    assert len(sim.labels) == len(sim.auths)
    counts = Counter(sim.labels)
    assert set(counts) == {"", *PATTERNS}
    fraud_share = 1 - counts[""] / len(sim.labels)
    assert 0.01 < fraud_share < 0.03  # about the rate asked for, on days 1..
    assert all(not lab for i, lab in enumerate(sim.labels) if sim.day_of(i) == 0)


def test_records_are_time_ordered_and_plausible(sim):
    times = [a.at_ms for a in sim.auths]
    assert times == sorted(times)
    for a in sim.auths:
        assert luhn_ok(a.pan) and a.amount_minor > 0 and len(a.mcc) == 4
        assert (a.lat is None) == (a.pos_entry_mode == "81")


def test_fraud_hides_in_good_traffic(sim):
    """Good cardholders do what fraud does: small purchases, foreign use, bursts."""
    good = [a for a, lab in zip(sim.auths, sim.labels, strict=True) if not lab]
    assert sum(a.amount_minor <= 300 for a in good) > 50
    assert sum(a.processing_code == "010000" for a in good) > 20
    assert sum(a.pos_entry_mode == "80" for a in good) > 5


def test_no_fraud_when_rate_is_zero():
    assert set(simulate(1, cards=50, days=2, fraud_rate=0).labels) == {""}
    with pytest.raises(ValueError):
        simulate(1, patterns=["phishing"])


def test_simulator_imports_only_codecs_and_hsm():
    tree = ast.parse(Path(fraud.__file__).read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    ours = {m for m in mods if m.startswith("payswitch.")}
    assert all(m.split(".")[1] in ("codecs", "hsm", "simulators") for m in ours)
