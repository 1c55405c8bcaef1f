"""Route scoring, least-cost debit routing and failover. Pure; the clock is passed in.

A BIN range may have several eligible routes (a primary and a secondary host link to
the same issuer; a debit card's own network or a debit network). ``RouteTable`` is
built from config and refuses a route naming a link that does not exist, with the key
named. ``rank(...)`` orders the eligible routes of one request:

* a route whose link's breaker does not ``allow`` is left out (no one waits for a dead
  link's timeout);
* otherwise a degraded route (timeout + error rate above ``UNHEALTHY_RATE``) goes
  last; then lower ``priority`` first, then better health (failure rate, then EWMA
  latency), then lower cost;
* for a debit card on a range whose config sets ``least_cost = true``, cost comes
  first among the healthy routes (health still breaks ties, priority last).

Cost is ``fixed_minor + ceil(amount_minor * bps / 10 000)`` in the request's currency.

``next_route(ranked, tried, failure)`` is the failover rule: only a failure that
proves the request never reached the issuer (breaker open, send failed) moves on to
the next route; a timeout or an answer after sending does not (the reversal rules
apply to a request that may have been authorized).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from payswitch.routing.health import Breaker, LinkHealth

BREAKER_OPEN, SEND_FAILED, TIMEOUT, ANSWERED = ("breaker_open", "send_failed", "timeout",
                                                "answered")
NOT_REACHED = frozenset({BREAKER_OPEN, SEND_FAILED})
UNHEALTHY_RATE = 0.2  # above this (timeouts + errors) a route counts as degraded


class RouteConfigError(ValueError):
    """Bad route configuration; the message starts with the offending key."""


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    link: str
    priority: int = 1  # lower is preferred
    fixed_minor: int = 0
    bps: int = 0  # basis points of the amount
    debit_network: bool = False

    def cost_minor(self, amount_minor: int) -> int:
        return self.fixed_minor + -(-amount_minor * self.bps // 10_000)


@dataclass(frozen=True, slots=True)
class RouteRange:
    prefix: str
    routes: tuple[Route, ...]
    least_cost: bool = False  # debit cards here may go the cheapest healthy way


@dataclass(frozen=True, slots=True)
class ScoredRoute:
    route: Route
    cost_minor: int
    failure_rate: float
    latency_ms: float | None


ROUTE_KEYS = {"name", "link", "priority", "fixed_minor", "bps", "debit_network"}


def _int(key: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RouteConfigError(f"{key}: must be an integer in [{lo}, {hi}]")
    return value


class RouteTable:
    """``ranges``: config ``[[routing.ranges]]`` tables: ``prefix``, ``least_cost``,
    ``routes = [{name, link, priority, fixed_minor, bps, debit_network}]``."""

    def __init__(self, ranges: list[Mapping], links: set[str],
                 prefix: str = "routing.ranges") -> None:
        self._by_prefix: dict[str, RouteRange] = {}
        for i, r in enumerate(ranges):
            key = f"{prefix}[{i}]"
            unknown = set(r) - {"prefix", "least_cost", "routes"}
            if unknown:
                raise RouteConfigError(f"{key}.{sorted(unknown)[0]}: unknown key")
            bin_prefix = r.get("prefix")
            if not isinstance(bin_prefix, str) or not bin_prefix.isdigit() or not (
                    1 <= len(bin_prefix) <= 19):
                raise RouteConfigError(f"{key}.prefix: must be 1..19 digits")
            if bin_prefix in self._by_prefix:
                raise RouteConfigError(f"{key}.prefix: {bin_prefix} configured twice")
            routes = tuple(self._route(f"{key}.routes[{j}]", d, links)
                           for j, d in enumerate(r.get("routes", [])))
            if not routes:
                raise RouteConfigError(f"{key}.routes: at least one route")
            self._by_prefix[bin_prefix] = RouteRange(bin_prefix, routes,
                                                     bool(r.get("least_cost", False)))
        self._longest = max((len(p) for p in self._by_prefix), default=0)

    @staticmethod
    def _route(key: str, d: Mapping, links: set[str]) -> Route:
        unknown = set(d) - ROUTE_KEYS
        if unknown:
            raise RouteConfigError(f"{key}.{sorted(unknown)[0]}: unknown key")
        link = d.get("link")
        if link not in links:
            raise RouteConfigError(f"{key}.link: no link named {link!r}")
        return Route(name=str(d.get("name", link)), link=link,
                     priority=_int(f"{key}.priority", d.get("priority", 1), 0, 1000),
                     fixed_minor=_int(f"{key}.fixed_minor", d.get("fixed_minor", 0), 0,
                                      10**9),
                     bps=_int(f"{key}.bps", d.get("bps", 0), 0, 10_000),
                     debit_network=bool(d.get("debit_network", False)))

    def eligible(self, pan: str) -> RouteRange | None:
        for n in range(min(len(pan), self._longest), 0, -1):
            found = self._by_prefix.get(pan[:n])
            if found is not None:
                return found
        return None


def rank(rng: RouteRange, amount_minor: int, is_debit: bool, now_ms: int,
         health: Mapping[str, LinkHealth], breakers: Mapping[str, Breaker]
         ) -> list[ScoredRoute]:
    """Eligible routes of one request, best first; routes with a closed-off link left out."""
    scored = []
    for r in rng.routes:
        if r.debit_network and not is_debit:
            continue
        breaker = breakers.get(r.link)
        if breaker is not None and not breaker.allow(now_ms):
            continue
        h = health.get(r.link)
        _, rate = h.failure_rate(now_ms) if h else (0, 0.0)
        latency = h.latency_ewma_ms if h else None
        scored.append(ScoredRoute(r, r.cost_minor(amount_minor), rate, latency))
    least_cost = is_debit and rng.least_cost

    def key(s: ScoredRoute) -> tuple:
        degraded = s.failure_rate > UNHEALTHY_RATE
        health_key = (s.failure_rate, s.latency_ms if s.latency_ms is not None else 0.0)
        if least_cost:
            return (degraded, s.cost_minor, health_key, s.route.priority)
        return (degraded, s.route.priority, health_key, s.cost_minor)

    return sorted(scored, key=key)


def next_route(ranked: list[ScoredRoute], tried: int, failure: str) -> ScoredRoute | None:
    """After route ``ranked[tried]`` failed with ``failure``: the one to try next, or
    None when the request must not (or cannot) move on."""
    if failure not in NOT_REACHED:
        return None  # it may have reached the issuer: timeout / reversal rules apply
    return ranked[tried + 1] if tried + 1 < len(ranked) else None
