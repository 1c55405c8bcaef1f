"""Window counters against brute force; the breaker as a state machine (hypothesis)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from payswitch.routing.health import (
    CLOSED,
    ERROR,
    HALF_OPEN,
    OK,
    OPEN,
    TIMEOUT,
    Breaker,
    HealthConfig,
    LinkHealth,
    WindowCounter,
    health_config,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.integers(1, 1000),
       st.lists(st.tuples(st.integers(0, 400), st.booleans()), max_size=80))
def test_window_counter_matches_brute_force(buckets, bucket_ms, steps):
    w = WindowCounter(buckets, bucket_ms)
    now, added = 0, []
    for gap, query in steps:
        now += gap * (bucket_ms // 7 + 1)
        if query:
            newest = now // bucket_ms
            want = sum(1 for t in added if newest - buckets < t // bucket_ms <= newest)
            assert w.total(now) == want
        else:
            w.add(now)
            added.append(now)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.integers(1, 50),
       st.lists(st.tuples(st.sampled_from(("add", "total", "clear")),
                          st.integers(-120, 200), st.integers(1, 3)), max_size=80))
def test_window_counter_against_a_list_of_events(buckets, bucket_ms, steps):
    """Any order of times (steps back too), counts above 1, totals asked of past and
    future windows, clears: the kept running sum agrees with summing the events."""
    w = WindowCounter(buckets, bucket_ms)
    now, latest, events = 1000, -1, []  # events: (bucket, n) the counter accepted
    for op, step, n in steps:
        now = max(0, now + step)
        b = now // bucket_ms
        if op == "add":
            w.add(now, n)
            if b > latest - buckets:
                events.append((b, n))
                latest = max(latest, b)
        elif op == "clear":
            w.clear()
            events = []
        else:
            newest = max(b, latest)
            assert w.total(now) == sum(k for e, k in events if newest - buckets < e <= newest)


def test_late_event_older_than_window_is_dropped():
    w = WindowCounter(3, 10)
    w.add(100)
    w.add(50)  # bucket 5, window is 8..10
    assert w.total(100) == 1
    w.add(85)  # bucket 8: inside
    assert w.total(100) == 2 and w.total(130) == 0


def test_health_rates_and_ewma():
    h = LinkHealth(HealthConfig(window_ms=10_000, buckets=10, ewma_alpha=0.5))
    h.record(0, OK, 100, approved=True)
    h.record(1, OK, 200)
    h.record(2, TIMEOUT)
    h.record(3, ERROR)
    assert h.latency_ewma_ms == 150
    assert h.rates(5) == {"sent": 4, "timeout_rate": 0.25, "error_rate": 0.25,
                          "approval_rate": 0.25}
    assert h.rates(20_000)["sent"] == 0


def test_breaker_opens_probes_and_closes():
    cfg = HealthConfig(window_ms=10_000, buckets=10, min_requests=4, failure_rate=0.5,
                       open_ms=5_000)
    h, b = LinkHealth(cfg), Breaker(cfg)
    for t in range(3):
        h.record(t, TIMEOUT)
        b.after_result(t, h)
    assert b.state == CLOSED  # 3 < min_requests
    h.record(3, OK, 10)
    b.after_result(3, h)
    assert b.state == OPEN and not b.allow(3)  # 3 of 4 failed
    assert not b.probe_due(4_999)
    assert b.probe_due(5_003) and b.state == HALF_OPEN and not b.allow(5_003)
    assert not b.probe_due(5_004)  # one echo at a time
    b.probe_result(5_100, False, h)
    assert b.state == OPEN and not b.probe_due(10_099) and b.probe_due(10_100)
    b.probe_result(10_200, True, h)
    assert b.state == CLOSED and b.allow(10_200) and h.rates(10_200)["sent"] == 0
    assert [(f, t) for _, f, t in b.transitions] == [
        (CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED)]


LEGAL = {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (HALF_OPEN, CLOSED)}


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.cfg = HealthConfig(window_ms=1_000, buckets=5, min_requests=3,
                                failure_rate=0.5, open_ms=700, max_transitions=8)
        self.h, self.b = LinkHealth(self.cfg), Breaker(self.cfg)
        self.now = 0
        self.log = []  # (t, outcome) since the breaker last closed

    @rule(gap=st.integers(0, 600))
    def tick(self, gap):
        self.now += gap

    @precondition(lambda self: self.b.state == CLOSED)
    @rule(outcome=st.sampled_from([OK, TIMEOUT, ERROR]))
    def send(self, outcome):
        assert self.b.allow(self.now)
        self.h.record(self.now, outcome, 5)
        self.b.after_result(self.now, self.h)
        sent, rate = self.h.failure_rate(self.now)
        tripped = sent >= 3 and rate >= 0.5
        assert (self.b.state == OPEN) == tripped

    @rule()
    def probe(self):
        before, opened = self.b.state, self.b.opened_at_ms
        due = self.b.probe_due(self.now)
        assert due == (before == OPEN and self.now - opened >= 700)
        if due:
            assert self.b.state == HALF_OPEN

    @precondition(lambda self: self.b.state == HALF_OPEN)
    @rule(ok=st.booleans())
    def echo(self, ok):
        self.b.probe_result(self.now, ok, self.h)
        assert self.b.state == (CLOSED if ok else OPEN)

    @invariant()
    def consistent(self):
        assert self.b.allow(self.now) == (self.b.state == CLOSED)
        assert len(self.b.transitions) <= 8
        for _, frm, to in self.b.transitions:
            assert (frm, to) in LEGAL
        pairs = list(self.b.transitions)
        for (_, _, to), (_, frm, _) in zip(pairs, pairs[1:], strict=False):
            assert to == frm  # a chain: each transition starts where the last ended


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize(("d", "key"), [
    ({"open_sec": 5}, "links.visa.health.open_sec"),
    ({"failure_rate": 1.5}, "links.visa.health.failure_rate"),
    ({"min_requests": "10"}, "links.visa.health.min_requests"),
    ({"buckets": 0}, "links.visa.health.buckets"),
    ({"window_ms": 5, "buckets": 10}, "links.visa.health.window_ms"),
])
def test_bad_health_config_is_refused_with_the_key_named(d, key):
    with pytest.raises(ValueError) as e:
        health_config(d, "links.visa.health")
    assert str(e.value).startswith(key + ":")
    assert health_config({"open_ms": 500}, "x").open_ms == 500


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.integers(1, 100),
       st.lists(st.tuples(st.integers(0, 60), st.integers(0, 3)), max_size=60))
def test_a_quiet_counter_read_often_agrees_with_brute_force(buckets, bucket_ms, steps):
    """A counter with few events read after every step (a link's timeouts, read by the
    breaker after each request): each read, repeated or not, is the window's count."""
    w = WindowCounter(buckets, bucket_ms)
    now, added = 0, []
    for gap, reads in steps:
        now += gap
        if gap % 5 == 0:
            w.add(now)
            added.append(now)
        newest = now // bucket_ms
        for _ in range(reads):
            assert w.total(now) == sum(1 for t in added
                                       if newest - buckets < t // bucket_ms <= newest)
