"""Stand-in decisions within the issuer's parameters; everything else is 91."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.routing.standin import (
    DAY_MS,
    StandInConfigError,
    StandInParams,
    StandInRequest,
    StandInUsage,
    decide,
)

P = StandInParams.from_dict({
    "max_daily_count": 2, "max_daily_amount_minor": 15_000, "max_single_amount_minor": 10_000,
    "processing_codes": ["00", "01"], "mccs": ["5411", "6011"], "max_risk_score": 400,
    "require_card_checks": True}, "standin.visa")


def req(amount=1_000, card="c1", pc="000000", mcc="5411", score=100, checks=True, now=0):
    return StandInRequest(card, amount, pc, mcc, score, checks, now)


@pytest.mark.parametrize(("r", "why"), [
    (req(pc="200000"), "processing_code"),
    (req(mcc="7995"), "mcc"),
    (req(amount=10_001), "max_single_amount"),
    (req(score=401), "risk_score"),
    (req(checks=False), "card_checks"),
    (req(checks=None), "card_checks"),
])
def test_outside_the_parameters_is_91(r, why):
    d = decide(P, StandInUsage(), r)
    assert (d.response_code, d.reason) == ("91", why)


def test_daily_count_and_amount_per_card_reset_next_day():
    u = StandInUsage()
    assert decide(P, u, req(amount=9_000)).response_code == "00"
    assert decide(P, u, req(amount=7_000)).reason == "max_daily_amount"  # 16 000 > 15 000
    assert decide(P, u, req(amount=6_000)).response_code == "00"
    assert decide(P, u, req(amount=1)).reason == "max_daily_count"
    assert decide(P, u, req(card="c2")).response_code == "00"  # per card
    assert decide(P, u, req(amount=9_000, now=DAY_MS)).response_code == "00"  # new day


def test_usage_is_bounded():
    u = StandInUsage(max_cards=3)
    for k in range(10):
        u.add(f"c{k}", 0, 1)
    assert u.today("c9", 0) == (1, 1) and u.today("c0", 0) == (0, 0)


@pytest.mark.parametrize(("d", "key"), [
    ({"max_daily_cnt": 1}, "standin.x.max_daily_cnt"),
    ({"max_risk_score": 1000}, "standin.x.max_risk_score"),
    ({"mccs": ["54"]}, "standin.x.mccs"),
    ({"require_card_checks": "yes"}, "standin.x.require_card_checks"),
])
def test_bad_params_are_refused_with_the_key_named(d, key):
    with pytest.raises(StandInConfigError) as e:
        StandInParams.from_dict(d, "standin.x")
    assert str(e.value).startswith(key + ":")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3 * DAY_MS), st.integers(1, 500)),
                max_size=60))
def test_usage_matches_a_least_recently_used_model(adds):
    """Per card today's count and amount; past max_cards the least recently used card is
    forgotten (it starts its day again), checked against a plain list-based model."""
    u = StandInUsage(max_cards=4)
    model: dict[str, list[tuple[int, int]]] = {}  # insertion order = recency
    for card, at, amount in sorted(adds, key=lambda t: t[1]):
        key = f"c{card}"
        u.add(key, at, amount)
        model[key] = model.pop(key, []) + [(at, amount)]
        if len(model) > 4:
            del model[next(iter(model))]
        assert len(u._by_card) <= 4
        for k, rows in model.items():
            today = [m for a, m in rows if a // DAY_MS == at // DAY_MS]
            assert u.today(k, at) == (len(today), sum(today))
