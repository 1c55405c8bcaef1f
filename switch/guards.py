"""Per-link health and circuit breaker (routing/health.py) on the switch's clock, and
the half-open probe: one 0800 echo on the link once the breaker's cool-down is over.

Outcomes come from the authorizations that went out (``ForwardFailover``): answered
(with its latency, approved or not), timed out, or a send failure. While a link's
breaker is open or half-open, ``allow`` is False and no authorization is sent there,
so none waits for that link's timeout; ``link_breaker_open`` follows it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio

from payswitch.routing.health import CLOSED, Breaker, HealthConfig, LinkHealth
from payswitch.switch.logs import log
from payswitch.switch.metrics import Metrics

PROBE_TICK_S = 0.25  # how often due probes are looked for
# A result refreshes the health gauges when the last refresh is this old; the probe
# loop refreshes them every tick anyway: at most a tick stale, and not ~15 µs of
# window sums and gauge locks on every authorization.
EXPORT_EVERY_MS = int(PROBE_TICK_S * 1000)


def now_ms() -> int:
    """The breakers' clock: trio's (monotonic; MockClock in tests)."""
    return int(trio.current_time() * 1000)


class LinkGuard:
    def __init__(self, link: str, config: HealthConfig, metrics: Metrics) -> None:
        self.link = link
        self.health = LinkHealth(config)
        self.breaker = Breaker(config)
        self._gauge = metrics.breaker_open.labels(link)
        self._gauge.set(0)
        self._health = tuple(g.labels(link) for g in (
            metrics.link_window_sent, metrics.link_timeout_rate, metrics.link_error_rate,
            metrics.link_approval_rate))
        self._latency = metrics.link_latency_ewma.labels(link)
        self._exported_ms: int | None = None

    def export(self, t: int | None = None) -> None:
        """The health gauges, on the switch's clock (not readable from the scrape
        thread, hence set here: each probe tick, and after a result when the last
        refresh is ``EXPORT_EVERY_MS`` old)."""
        t = now_ms() if t is None else t
        self._exported_ms = t
        r = self.health.rates(t)
        for gauge, key in zip(self._health, ("sent", "timeout_rate", "error_rate",
                                             "approval_rate"), strict=True):
            gauge.set(r[key])
        if self.health.latency_ewma_ms is not None:
            self._latency.set(self.health.latency_ewma_ms / 1000)

    def allow(self) -> bool:
        return self.breaker.allow(now_ms())

    def record(self, outcome: str, latency_ms: float | None = None,
               approved: bool = False) -> None:
        t = now_ms()
        self.health.record(t, outcome, latency_ms, approved)
        before = self.breaker.state
        self.breaker.after_result(t, self.health)
        if self.breaker.state != before:  # the gauge moves only with the state
            self._changed(before, outcome=outcome)
            self.export(t)
        elif self._exported_ms is None or t - self._exported_ms >= EXPORT_EVERY_MS:
            self.export(t)

    def _changed(self, before: str, **why: Any) -> None:
        after = self.breaker.state
        self._gauge.set(0 if after == CLOSED else 1)
        if after != before:
            log("breaker", logging.WARNING if after != CLOSED else logging.INFO,
                link=self.link, state=after, previous=before, **why)

    async def probe(self, link: Any) -> None:
        """If the cool-down is over: one echo, its result closes or re-opens."""
        before = self.breaker.state
        if not self.breaker.probe_due(now_ms()):
            return
        self._changed(before)
        ok = link.state == "signed_on" and await link.echo()
        before = self.breaker.state
        self.breaker.probe_result(now_ms(), ok, self.health)
        self._changed(before, probe="ok" if ok else "failed")


def make_guards(links: Mapping[str, Any], config: HealthConfig,
                metrics: Metrics) -> dict[str, LinkGuard]:
    return {name: LinkGuard(name, config, metrics) for name in links}


async def probe_loop(guards: Mapping[str, LinkGuard], links: Mapping[str, Any]) -> None:
    """Runs for the switch's life: each tick, the due probes, concurrently (each is
    bounded by its link's echo timeout)."""
    while True:
        await trio.sleep(PROBE_TICK_S)
        async with trio.open_nursery() as n:
            for name, guard in guards.items():
                guard.export()  # the window's rates move with time, not only results
                if guard.breaker.state != CLOSED:
                    n.start_soon(guard.probe, links[name])


def transitions(guards: Mapping[str, LinkGuard]) -> dict[str, list[tuple[int, str, str]]]:
    """Every link's kept breaker transitions (ms, from, to), for reports."""
    return {name: list(g.breaker.transitions) for name, g in guards.items()}
