"""Several routes per BIN range, link health, circuit breakers and failover
(switch/participants/failover.py, switch/guards.py), in-process against the fakes in
virtual time: what the terminal gets, which link got the request, how long it waited."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import trio
from test_txn import virtual
from txnfakes import Bench, FakeLink, approve, key, request

from payswitch.codecs.iso8583.message import Message
from payswitch.switch.config import ConfigError, parse
from payswitch.switch.guards import EXPORT_EVERY_MS, PROBE_TICK_S, make_guards, probe_loop

TIMEOUT_MS = 2000


def routed_config(health: dict[str, Any] | None = None, **extra: Any) -> Any:
    return parse({
        "switch": {"duplicate_wait_ms": 5000},
        "listeners": [{"name": "pos", "kind": "terminal"}],
        "terminals": [{"id": "TERM0001", "listener": "pos"}],
        "links": [{"name": n, "host": "127.0.0.1", "port": 1,
                   "request_timeout_ms": TIMEOUT_MS} for n in ("visa", "visa2", "mc")],
        "routes": [{"prefix": "5", "link": "mc"}],
        "routing": {"ranges": [{"prefix": "4", "routes": [
            {"link": "visa", "priority": 1}, {"link": "visa2", "priority": 2}]}],
            "health": {"min_requests": 2, "failure_rate": 0.5, "open_ms": 5000,
                       **(health or {})}, **extra},
    })


class Answers:
    """Per link: answered (approve) or silent; flipped by the test."""

    def __init__(self) -> None:
        self.silent: set[str] = set()

    def for_link(self, name: str):
        def answer(msg: Message) -> Message | None:
            return None if name in self.silent else approve(msg)
        return answer


def bench(answers: Answers, **kw: Any) -> Bench:
    b = Bench()
    cfg = routed_config(**kw)
    b.cfg = b.svc.cfg = cfg
    b.links.clear()
    b.links.update({x.name: FakeLink(x.name, x.request_timeout_ms, answers.for_link(x.name))
                    for x in cfg.links})
    b.svc.guards = make_guards(b.links, cfg.routing.health, b.svc.metrics)
    return b


def gauge(b: Bench, link: str) -> float:
    return b.svc.metrics.registry.get_sample_value("link_breaker_open", {"link": link})


def failovers(b: Bench) -> list[str | None]:
    return [d for e, d in b.store.events if e == "failover"]


@virtual
async def test_a_down_primary_fails_over_at_once_to_the_secondary():
    b = bench(Answers())
    b.links["visa"].state = "down"
    t0 = trio.current_time()
    resp = await b.send(request())
    assert resp.response_code == "00"
    assert trio.current_time() - t0 < 0.1  # no wait for anything
    assert len(b.links["visa2"].sent) == 1 and b.links["visa"].sent == []
    assert failovers(b) == [key(request())]


@virtual
async def test_a_timeout_after_sending_never_fails_over():
    answers = Answers()
    answers.silent.add("visa")
    b = bench(answers)
    resp = await b.send(request())
    assert resp.response_code == "91"
    assert b.links["visa2"].sent == []  # it may have reached the issuer: no second try
    assert [m for m, _ in b.store.saf_mtis()] == ["0420"]


@virtual
async def test_a_route_that_timed_out_goes_last_so_the_next_request_does_not_wait():
    answers = Answers()
    answers.silent.add("visa")
    b = bench(answers)
    assert (await b.send(request(stan="000001"))).response_code == "91"
    t0 = trio.current_time()
    assert (await b.send(request(stan="000002"))).response_code == "00"
    assert trio.current_time() - t0 < 0.1  # visa is degraded: visa2 ranked first
    assert len(b.links["visa"].sent) == 1 and len(b.links["visa2"].sent) == 1


@virtual
async def test_every_route_open_is_91_without_waiting():
    answers = Answers()
    answers.silent.update({"visa", "visa2"})
    b = bench(answers)
    for i in (1, 2, 3, 4):  # visa, visa2 (visa degraded), visa (priority): opens,
        assert (await b.send(request(stan=f"{i:06d}"))).response_code == "91"  # visa2
    assert gauge(b, "visa") == 1 and gauge(b, "visa2") == 1
    t0 = trio.current_time()
    assert (await b.send(request(stan="000005"))).response_code == "91"
    assert trio.current_time() - t0 < 0.1


@virtual
async def test_half_open_probes_with_an_echo_and_closes_when_it_is_answered():
    answers = Answers()
    answers.silent.add("visa")
    b = bench(answers)
    b.links["visa2"].state = "down"  # only visa can take it
    for i in (1, 2):
        assert (await b.send(request(stan=f"{i:06d}"))).response_code == "91"
    assert gauge(b, "visa") == 1
    async with trio.open_nursery() as n:
        n.start_soon(probe_loop, b.svc.guards, b.links)
        await trio.sleep(6)  # past open_ms: one probe, unanswered: open again
        assert b.links["visa"].echoes == 1 and gauge(b, "visa") == 1
        answers.silent.clear()  # the issuer is back
        await trio.sleep(5.5)  # the next probe is answered: closed
        assert b.links["visa"].echoes == 2 and gauge(b, "visa") == 0
        n.cancel_scope.cancel()
    assert (await b.send(request(stan="000003"))).response_code == "00"
    assert len(b.links["visa"].sent) == 3  # back on the primary
    states = [(f, t) for _, f, t in b.svc.guards["visa"].breaker.transitions]
    assert states == [("closed", "open"), ("open", "half_open"), ("half_open", "open"),
                      ("open", "half_open"), ("half_open", "closed")]


@virtual
async def test_a_plain_routes_link_has_a_breaker_too():
    answers = Answers()
    answers.silent.add("mc")
    b = bench(answers)
    for i in (1, 2):
        await b.send(request(stan=f"{i:06d}", pan="5413330089010012"))
    t0 = trio.current_time()
    resp = await b.send(request(stan="000003", pan="5413330089010012"))
    assert resp.response_code == "91" and trio.current_time() - t0 < 0.1
    assert len(b.links["mc"].sent) == 2


@pytest.mark.parametrize(("routing", "named"), [
    ({"ranges": [{"prefix": "4", "routes": [{"link": "amex"}]}]},
     "routing.ranges[0].routes[0].link"),
    ({"ranges": [{"prefix": "4", "routes": [{"link": "visa", "cost": 1}]}]},
     "routing.ranges[0].routes[0].cost"),
    ({"health": {"failure_rate": 2}}, "routing.health.failure_rate"),
    ({"ranges": [], "standin": {"4": {}}}, "routing.standin.4"),
    ({"ranges": [{"prefix": "4", "routes": [{"link": "visa"}]}],
      "standin": {"4": {"max_daily_count": -1}}}, "routing.standin.4.max_daily_count"),
    ({"breakers": {}}, "routing.breakers"),
])
def test_bad_routing_config_is_refused_with_the_key_named(routing, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("[", r"\[")
                       .replace("]", r"\]")):
        parse({"links": [{"name": "visa", "host": "127.0.0.1", "port": 1}],
               "routing": routing})


@virtual
async def test_link_health_is_exported_per_link():
    """Each link's window rates and latency EWMA reach its Prometheus gauges: a timeout,
    an answer coded 30 (format error) and approvals; the rates fall back to 0 once the
    window has passed with nothing sent."""
    answers = Answers()
    b = bench(answers, health={"min_requests": 10})
    b.links["visa2"].state = "down"
    coded = iter(["00", "30", "00"])
    b.links["visa"].answer = lambda m: replace(approve(m), response_code=next(coded))
    for i in (1, 2, 3):
        await b.send(request(stan=f"{i:06d}"))
    answers.silent.add("visa")
    b.links["visa"].answer = answers.for_link("visa")
    assert (await b.send(request(stan="000004"))).response_code == "91"

    def sample(name: str, link: str = "visa") -> float:
        return b.svc.metrics.registry.get_sample_value(name, {"link": link})
    assert sample("link_health_window_requests") == 4
    assert (sample("link_timeout_rate"), sample("link_error_rate"),
            sample("link_approval_rate")) == (0.25, 0.25, 0.5)
    assert sample("link_latency_ewma_seconds") >= 0
    assert sample("link_health_window_requests", "mc") == 0
    async with trio.open_nursery() as n:
        n.start_soon(probe_loop, b.svc.guards, b.links)
        await trio.sleep(61)  # the 60 s window is over: the probe tick refreshes them
        n.cancel_scope.cancel()
    assert sample("link_health_window_requests") == 0 and sample("link_timeout_rate") == 0


@virtual
async def test_results_refresh_the_health_gauges_at_most_once_a_tick():
    """A result within EXPORT_EVERY_MS of the last refresh leaves a link's health gauges
    as they were (no window sums and gauge locks per authorization); the next tick of
    the probe loop, or a later result, brings them up to date. A breaker that trips
    refreshes them at once."""
    b = bench(Answers(), health={"min_requests": 10})
    b.links["visa2"].state = "down"

    def sent() -> float:
        return b.svc.metrics.registry.get_sample_value("link_health_window_requests",
                                                       {"link": "visa"})
    assert (await b.send(request(stan="000001"))).response_code == "00"
    assert sent() == 1  # the first result refreshes
    for i in (2, 3):  # the same instant: counted, not yet exported
        assert (await b.send(request(stan=f"{i:06d}"))).response_code == "00"
    assert sent() == 1
    async with trio.open_nursery() as n:
        n.start_soon(probe_loop, b.svc.guards, b.links)
        await trio.sleep(PROBE_TICK_S * 1.5)  # one tick
        n.cancel_scope.cancel()
    assert sent() == 3
    await trio.sleep(EXPORT_EVERY_MS / 1000)
    assert (await b.send(request(stan="000004"))).response_code == "00"
    assert sent() == 4  # a result a tick after the last refresh refreshes
