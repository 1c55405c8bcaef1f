"""Route table config, ranking by health / cost / priority, least-cost debit, failover."""

import pytest

from payswitch.routing.health import TIMEOUT, Breaker, HealthConfig, LinkHealth
from payswitch.routing.routes import (
    ANSWERED,
    BREAKER_OPEN,
    SEND_FAILED,
    Route,
    RouteConfigError,
    RouteTable,
    next_route,
    rank,
)
from payswitch.routing.routes import TIMEOUT as ROUTE_TIMEOUT

LINKS = {"visa_a", "visa_b", "debit_net"}
RANGES = [
    {"prefix": "4761", "routes": [
        {"name": "primary", "link": "visa_a", "priority": 1, "fixed_minor": 5, "bps": 10},
        {"name": "secondary", "link": "visa_b", "priority": 2, "fixed_minor": 5, "bps": 10},
    ]},
    {"prefix": "476173", "least_cost": True, "routes": [
        {"name": "own", "link": "visa_a", "priority": 1, "fixed_minor": 10, "bps": 20},
        {"name": "debit", "link": "debit_net", "priority": 2, "fixed_minor": 2, "bps": 5,
         "debit_network": True},
    ]},
]


@pytest.mark.parametrize(("ranges", "key"), [
    ([{"prefix": "4", "routes": [{"link": "nope"}]}], "routing.ranges[0].routes[0].link"),
    ([{"prefix": "4", "routes": [{"link": "visa_a", "bps": -1}]}],
     "routing.ranges[0].routes[0].bps"),
    ([{"prefix": "4", "routes": [{"link": "visa_a", "fee": 1}]}],
     "routing.ranges[0].routes[0].fee"),
    ([{"prefix": "4x", "routes": [{"link": "visa_a"}]}], "routing.ranges[0].prefix"),
    ([{"prefix": "4", "routes": []}], "routing.ranges[0].routes"),
    ([{"prefix": "4", "routes": [{"link": "visa_a"}], "weight": 2}], "routing.ranges[0].weight"),
])
def test_bad_route_config_is_refused_with_the_key_named(ranges, key):
    with pytest.raises(RouteConfigError) as e:
        RouteTable(ranges, LINKS)
    assert str(e.value).startswith(key + ":")


def test_cost_is_fixed_plus_basis_points_rounded_up():
    r = Route("r", "visa_a", fixed_minor=5, bps=15)
    assert r.cost_minor(10_000) == 20 and r.cost_minor(1) == 6 and r.cost_minor(0) == 5


def _health(**bad):
    out = {}
    for link in LINKS:
        h = LinkHealth()
        for t in range(10):
            h.record(t, TIMEOUT if t < bad.get(link, 0) else "ok", 20)
        out[link] = h
    return out


def test_priority_first_and_an_open_breaker_is_skipped():
    table = RouteTable(RANGES, LINKS)
    rng = table.eligible("4761990000000001")
    assert rng.prefix == "4761"
    names = [s.route.name for s in rank(rng, 1000, False, 100, _health(), {})]
    assert names == ["primary", "secondary"]
    breakers = {"visa_a": Breaker(state="open", opened_at_ms=0)}
    assert [s.route.name for s in rank(rng, 1000, False, 100, _health(), breakers)] == [
        "secondary"]


def test_degraded_route_goes_last():
    rng = RouteTable(RANGES, LINKS).eligible("4761990000000001")
    ranked = rank(rng, 1000, False, 100, _health(visa_a=4), {})  # 40% timeouts
    assert [s.route.name for s in ranked] == ["secondary", "primary"]


def test_least_cost_debit_only_for_debit_cards_where_allowed():
    rng = RouteTable(RANGES, LINKS).eligible("4761730000000001")
    assert [s.route.name for s in rank(rng, 50_000, True, 100, _health(), {})] == [
        "debit", "own"]
    assert [s.route.name for s in rank(rng, 50_000, False, 100, _health(), {})] == ["own"]
    breakers = {"debit_net": Breaker(HealthConfig(), state="open")}
    assert [s.route.name for s in rank(rng, 50_000, True, 100, _health(), breakers)] == [
        "own"]


def test_failover_only_when_the_issuer_cannot_have_seen_it():
    rng = RouteTable(RANGES, LINKS).eligible("4761990000000001")
    ranked = rank(rng, 1000, False, 100, _health(), {})
    assert next_route(ranked, 0, SEND_FAILED).route.name == "secondary"
    assert next_route(ranked, 0, BREAKER_OPEN).route.name == "secondary"
    assert next_route(ranked, 0, ROUTE_TIMEOUT) is None
    assert next_route(ranked, 0, ANSWERED) is None
    assert next_route(ranked, 1, SEND_FAILED) is None
