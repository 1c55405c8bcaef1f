"""Risk feature state: window counts against brute force, bounds, travel, persistence."""

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.routing.risk_features import (
    DAY_MS,
    FEATURES,
    HOUR_MS,
    MINUTE_MS,
    AuthInput,
    Limits,
    RiskState,
    entry_mode_of,
    partition_of,
)

F = {name: i for i, name in enumerate(FEATURES)}


def auth(at_ms, card="c1", merchant="m1", amount=1000, lat=None, lon=None, bin6="476173",
         country="840", terminal="t1", entry=1):
    return AuthInput(at_ms=at_ms, card_token=card, bin6=bin6, amount_minor=amount,
                     mcc="5411", merchant_id=merchant, terminal_id=terminal, country=country,
                     lat=lat, lon=lon, entry_mode=entry, is_cash=False)


events = st.lists(
    st.tuples(st.integers(0, 3 * HOUR_MS), st.sampled_from(["c1", "c2", "c3"]),
              st.sampled_from(["m1", "m2"]), st.integers(1, 100_000)),
    min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(events)
def test_window_counts_match_brute_force(evs):
    evs = sorted(evs)
    state = RiskState()
    seen = []
    for at, card, merch, amount in evs:
        row = state.features(auth(at, card, merch, amount))
        prior = [e for e in seen if e[1] == card]
        for name, span in (("card_n_1m", MINUTE_MS), ("card_n_1h", HOUR_MS),
                           ("card_n_24h", DAY_MS)):
            assert row[F[name]] == sum(1 for e in prior if at - e[0] < span), name
        amt_1h = sum(e[3] for e in prior if at - e[0] < HOUR_MS)
        assert math.isclose(row[F["card_amount_log_1h"]], math.log1p(amt_1h))
        assert row[F["card_merchants_1h"]] == len({e[2] for e in prior if at - e[0] < HOUR_MS})
        at_m = [e for e in seen if e[2] == merch and at - e[0] < HOUR_MS]
        assert row[F["merchant_n_1h"]] == len(at_m)
        assert row[F["merchant_cards_1h"]] == len({e[1] for e in at_m})
        assert row[F["merchant_n_1m"]] == sum(1 for e in at_m if at - e[0] < MINUTE_MS)
        state.observe(auth(at, card, merch, amount))
        seen.append((at, card, merch, amount))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2 * DAY_MS), st.integers(0, 30), st.integers(0, 9)),
                max_size=120))
def test_state_stays_within_its_limits(evs):
    lim = Limits(max_cards=5, max_merchants=4, max_terminals=3, events_per_card=7,
                 events_per_merchant=6, events_per_terminal=5, usual_merchants=3,
                 usual_countries=2)
    state = RiskState(lim)
    for at, card, m in sorted(evs):
        state.observe(auth(at, f"c{card}", f"m{m}", terminal=f"t{m}", country=f"{m:03d}"))
        assert len(state.cards) <= 5 and len(state.merchants) <= 4
        assert len(state.terminals) <= 3
        for c in state.cards.values():
            assert len(c.events) <= 7 and len(c.merchants) <= 3 and len(c.countries) <= 2
            assert all(c.events[-1][0] - e[0] < DAY_MS for e in c.events)
        for p in state.merchants.values():
            assert len(p.events) <= 6
            assert all(p.events[-1][0] - e[0] < HOUR_MS for e in p.events)
    if evs:  # the most recent card is always kept
        last = sorted(evs)[-1]
        assert f"c{last[1]}" in state.cards


def test_impossible_travel_london_to_sydney():
    state = RiskState()
    state.observe(auth(0, lat=51.5074, lon=-0.1278))
    row = state.features(auth(HOUR_MS, lat=-33.8688, lon=151.2093))
    # great-circle London-Sydney is about 16 990 km (published)
    assert 16_800 < row[F["km_from_prev"]] < 17_200
    assert row[F["kmh_from_prev"]] > 16_000
    state.observe(auth(HOUR_MS, lat=-33.8688, lon=151.2093))
    assert state.features(auth(HOUR_MS + 1))[F["card_fast_24h"]] == 1


def test_card_not_present_between_keeps_last_location():
    state = RiskState()
    state.observe(auth(0, lat=51.5, lon=-0.13))
    state.observe(auth(10 * MINUTE_MS, entry=5))  # online purchase, no terminal location
    row = state.features(auth(20 * MINUTE_MS, lat=40.71, lon=-74.0))
    assert row[F["secs_since_prev"]] == 600
    assert row[F["kmh_from_prev"]] > 5000  # measured from London, 20 minutes before


def test_bin_attack_counts_distinct_cards_of_one_bin_at_a_merchant():
    state = RiskState()
    for k in range(6):
        state.observe(auth(k * 1000, card=f"x{k}", bin6="411111"))
    state.observe(auth(7000, card="other", bin6="541333"))
    row = state.features(auth(8000, card="new", bin6="411111"))
    assert row[F["merchant_bin_cards_1h"]] == 6
    assert row[F["merchant_new_cards_1h"]] == 7


def test_snapshot_restores_the_same_features():
    state = RiskState()
    for k in range(50):
        state.observe(auth(k * 97_000, card=f"c{k % 7}", merchant=f"m{k % 5}",
                           amount=100 + k * 37, lat=50 + k % 3, lon=k % 4))
    snap = json.loads(json.dumps(state.snapshot()))
    back = RiskState.restore(snap)
    probe = auth(50 * 97_000, card="c3", merchant="m1", lat=51, lon=2)
    a, b = state.features(probe), back.features(probe)
    assert len(a) == len(FEATURES) == len(state.features(auth(0, card="never-seen")))
    assert all((x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def test_entry_modes_and_partitions():
    assert entry_mode_of("051") == 1 and entry_mode_of("071") == 2
    assert entry_mode_of("801") == 3 and entry_mode_of("812") == 5
    assert entry_mode_of(None) == 0 and entry_mode_of("99") == 0
    parts = {partition_of(f"tok{i}", 4) for i in range(100)}
    assert parts == {0, 1, 2, 3}
    assert partition_of("abc", 4) == partition_of("abc", 4)
