"""Running windows (risk_features.HOT): the same features as the scan, bit for bit, on
random streams (in order, with ties, out of order, with reads back in time, evictions
and restores), and a busy card, merchant and terminal are read without a scan."""

import json
import math
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.lab.risk_cli import auth_input, train_on_simulation
from payswitch.routing.risk_decision import RiskScorer
from payswitch.routing.risk_features import (
    DAY_MS,
    FEATURES,
    HOT,
    HOUR_MS,
    MINUTE_MS,
    AuthInput,
    Limits,
    RiskState,
)
from payswitch.routing.risk_model import RiskModel, TrainParams
from payswitch.routing.risk_rules import RiskConfig
from payswitch.simulators.fraud import simulate


def same(a, b):
    """Equal as the model sees them: bit for bit, NaN where NaN."""
    return len(a) == len(b) and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def auth(at_ms, card, merchant, terminal, amount, country="840", bin6="476173", entry=1,
         cash=False, mcc="5411", lat=None, lon=None):
    return AuthInput(at_ms=at_ms, card_token=card, bin6=bin6, amount_minor=amount, mcc=mcc,
                     merchant_id=merchant, terminal_id=terminal, country=country, lat=lat,
                     lon=lon, entry_mode=entry, is_cash=cash)


# steps between authorizations on a 20 s grid, so that events often sit exactly on a
# window's edge: mostly short (a busy card), ties, a few past a whole window, and a few
# back in time (a late DE7, a replayed row)
STEPS = st.sampled_from([0] * 6 + [20_000] * 24 + [40_000] * 6 + [MINUTE_MS] * 6 + [
    15 * MINUTE_MS] * 4 + [HOUR_MS, DAY_MS, 1, -20_000, -HOUR_MS])
STREAM = st.lists(st.tuples(
    STEPS, st.integers(0, 2), st.integers(0, 2), st.integers(0, 1),
    st.sampled_from([0, 1, 299, 300, 301, 1_000, 25_000, 999_999]),
    st.sampled_from(["840", "826", "036"]), st.sampled_from(["476173", "543210"]),
    st.integers(0, 5), st.booleans(), st.sampled_from(["5411", "5732", "6011"]),
    st.booleans(), st.sampled_from(["read"] * 12 + ["skip_read", "restore"])),
    min_size=40, max_size=200)
SMALL = Limits(max_cards=2, max_merchants=2, max_terminals=1, events_per_card=HOT + 3,
               events_per_merchant=HOT + 5, events_per_terminal=HOT + 1, usual_merchants=2,
               usual_countries=2)


@settings(max_examples=200, deadline=None)
@given(STREAM, st.booleans())
def test_windows_give_the_scans_features(stream, small):
    limits = SMALL if small else Limits()
    fast, scan = RiskState(limits), RiskState(limits, windows=False)
    at = 1_795_000_000_000
    for i, (step, c, m, t, amount, country, bin6, entry, cash, mcc, located, what) in \
            enumerate(stream):
        at += step
        a = auth(at, f"c{c}", f"m{m}", f"t{t}", amount, country, bin6, entry, cash, mcc,
                 *((51.5 + i % 3, -0.1 * i) if located else (None, None)))
        if what == "restore":  # windows are not persisted: rebuilt from the events
            fast = RiskState.restore(json.loads(json.dumps(fast.snapshot())), limits)
        if what != "skip_read":  # replay observes without reading
            got, want = fast.features(a), scan.features(a)
            assert same(got, want), [(n, x, y) for n, x, y in zip(FEATURES, got, want,
                                                                  strict=True) if not same(
                [x], [y])]
        fast.observe(a)
        scan.observe(a)


class Counted(deque):
    """A deque that counts full passes over it (the scan)."""

    passes = 0

    def __iter__(self):
        Counted.passes += 1
        return super().__iter__()


def test_a_busy_card_merchant_and_terminal_are_read_without_a_scan():
    state = RiskState()
    at = 1_795_000_000_000
    for k in range(400):  # one card, merchant and terminal, every 3 s: all windows full
        a = auth(at + 3_000 * k, "c1", "m1", "t1", 1_000 + k % 7 * 900)
        state.features(a)
        state.observe(a)
    entities = [state.cards["c1"], state.merchants["m1"], state.terminals["t1"]]
    assert all(e.win is not None for e in entities)
    for e in entities:
        e.events = Counted(e.events)
    Counted.passes = 0
    for k in range(400, 450):
        a = auth(at + 3_000 * k, "c1", "m1", "t1", 1_000 + k % 7 * 900)
        state.features(a)
        state.observe(a)
    assert Counted.passes == 0
    # one authorization out of order (a late DE7): the card is scanned again until it
    # has left its events; the merchant's and terminal's windows take it in its place
    late = auth(at + 3_000 * 449 - 10_000, "c1", "m1", "t1", 500)
    state.features(late)
    state.observe(late)
    card, merchant, terminal = entities
    assert card.win is None and card.inv == 1
    assert merchant.win is not None and terminal.win is not None and merchant.inv == 1
    Counted.passes = 0
    a = auth(at + 3_000 * 450, "c1", "m1", "t1", 1_000)
    state.features(a)
    assert Counted.passes == 1  # the card's events only


def test_a_merchant_with_late_authorizations_keeps_its_windows():
    """DE7 on whole seconds from many terminals: now and then one arrives after the next
    second's. The merchant's and terminals' reads stay without a scan, and give the
    scan's figures."""
    fast, scan = RiskState(), RiskState(windows=False)
    at = 1_795_000_000_000
    for k in range(3_000):
        t = at + k * 200 // 1000 * 1000 - (1_000 if k % 17 == 0 else 0)
        a = auth(t, f"c{k % 40}", "m1", f"t{k % 16}", 1_000 + k % 5 * 300)
        assert same(fast.features(a), scan.features(a))
        fast.observe(a)
        scan.observe(a)
    merchant = fast.merchants["m1"]
    assert merchant.inv > 0 and merchant.win is not None
    merchant.events = Counted(merchant.events)
    Counted.passes = 0
    for k in range(3_000, 3_100):
        a = auth(at + k * 200 // 1000 * 1000, f"c{k % 40}", "m1", f"t{k % 16}", 1_000)
        assert same(fast.features(a), scan.features(a))
        fast.observe(a)
        scan.observe(a)
    assert Counted.passes == 0


def test_windows_stay_bounded_by_the_events_kept():
    lim = Limits(events_per_card=20, events_per_merchant=30, events_per_terminal=10)
    state = RiskState(lim)
    at = 1_795_000_000_000
    for k in range(3_000):
        a = auth(at + 500 * k, f"c{k % 2}", "m1", f"t{k % 3}", 100 + k, country=f"{k % 50:03d}")
        state.features(a)
        state.observe(a)
    for c in state.cards.values():
        w = c.win
        assert w is not None and len(w.d24) <= 20 and len(w.merch24) <= 20
        assert len(w.countries24) <= 20 and len(w.terms1h) <= 20
    for p, cap in [(state.merchants["m1"], 30)] + [(t, 10) for t in state.terminals.values()]:
        assert p.win is not None and len(p.win.d1h) <= cap and len(p.win.cards) <= cap


@pytest.fixture(scope="module")
def model():
    return RiskModel(train_on_simulation(7, cards=800, days=3, params=TrainParams(rounds=40),
                                         fraud_rate=0.05))


def test_decisions_on_a_simulated_population_are_the_scans(model):
    """Scores, actions and reasons of a simulated population (its merchants busy enough
    for windows) through the scorer, windows against the scan."""
    sim = simulate(8, cards=600, days=2, fraud_rate=0.05)
    cfg = RiskConfig.from_dict({"rules": {"max_card_1h": 5, "max_merchant_small_1h": 6},
                                "thresholds": {"decline": 500, "refer": 200}})
    fast = RiskScorer(cfg, RiskState(), model)
    scan = RiskScorer(cfg, RiskState(windows=False), model)
    for rec in sim.auths:
        a = auth_input(rec)
        assert fast.assess(a, "visa") == scan.assess(a, "visa")
    assert sum(p.win is not None for p in fast.state.merchants.values()) > 0
