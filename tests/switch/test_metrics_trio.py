"""The switch's lock-free request metrics (TrioCounter, TrioHistogram) expose exactly
what prometheus_client's own Counter and Histogram expose for the same updates: the
reference is the library's classes, fed the same values, rendered by its own
exposition code."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from payswitch.switch.metrics import Metrics, TrioCounter, TrioHistogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _text(registry: CollectorRegistry) -> list[str]:
    """The exposition without the _created samples (a wall-clock time of creation)."""
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]


amounts = st.one_of(st.floats(min_value=-1, max_value=20, allow_nan=False),
                    st.sampled_from(BUCKETS), st.just(math.inf))


@given(st.lists(st.tuples(st.sampled_from(["0100", "0200", "0400"]), amounts),
                max_size=40))
def test_histogram_matches_prometheus_client(observed: list[tuple[str, float]]) -> None:
    ours, ref = CollectorRegistry(), CollectorRegistry()
    h1 = TrioHistogram("d_seconds", "d", ["mti"], registry=ours, buckets=BUCKETS)
    h2 = Histogram("d_seconds", "d", ["mti"], registry=ref, buckets=BUCKETS)
    for mti, v in observed:
        h1.labels(mti).observe(v)
        h2.labels(mti).observe(v)
    assert _text(ours) == _text(ref)


@given(st.lists(st.tuples(st.sampled_from(["00", "05", "91"]),
                          st.one_of(st.just(1), st.floats(0, 1e6))), max_size=40))
def test_counter_matches_prometheus_client(incs: list[tuple[str, float]]) -> None:
    ours, ref = CollectorRegistry(), CollectorRegistry()
    c1 = TrioCounter("r_total", "r", ["code"], registry=ours)
    c2 = Counter("r_total", "r", ["code"], registry=ref)
    plain1 = TrioCounter("p_total", "p", registry=ours)
    plain2 = Counter("p_total", "p", registry=ref)
    for code, n in incs:
        c1.labels(code).inc(n)
        c2.labels(code).inc(n)
        plain1.inc()
        plain2.inc()
    assert _text(ours) == _text(ref)


def test_a_negative_increment_is_refused_and_nan_counted_in_no_bucket() -> None:
    c = TrioCounter("n_total", "n", registry=CollectorRegistry())
    with pytest.raises(ValueError):
        c.inc(-1)
    ours, ref = CollectorRegistry(), CollectorRegistry()
    TrioHistogram("x", "x", registry=ours, buckets=BUCKETS).observe(math.nan)
    Histogram("x", "x", registry=ref, buckets=BUCKETS).observe(math.nan)
    assert _text(ours) == _text(ref)
    assert 'x_bucket{le="+Inf"} 0.0' in _text(ours)


def test_the_request_metrics_are_the_lock_free_ones() -> None:
    m = Metrics()
    for metric in (m.attempts, m.success, m.responses, m.duplicates, m.link_requests,
                   m.link_responses):
        assert type(metric) is TrioCounter
    assert type(m.duration) is TrioHistogram and type(m.ledger_write) is TrioHistogram
    m.responses.labels("0100", "00").inc()
    m.duration.labels("0100").observe(0.003)
    text = generate_latest(m.registry).decode()
    assert 'payment_responses_total{mti="0100",response_code="00"} 1.0' in text
    assert 'payment_processing_duration_seconds_bucket{le="0.005",mti="0100"} 1.0' in text
    assert 'payment_processing_duration_seconds_bucket{le="0.0025",mti="0100"} 0.0' in text
