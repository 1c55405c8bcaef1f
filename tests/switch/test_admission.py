"""Admission, MalformedWindow and LogSampler: pure bookkeeping, no sockets."""

from __future__ import annotations

from payswitch.switch.admission import Admission, LogSampler, MalformedWindow


def test_unproven_overflow_evicts_the_oldest_unproven():
    adm = Admission(max_connections=10, per_source=10, max_unproven=3)
    for c in "abc":
        assert adm.admit(c, "10.0.0.1", proven=False) == (True, [])
    assert adm.admit("d", "10.0.0.2", proven=False) == (True, ["a"])
    assert (len(adm), adm.unproven) == (3, 3)


def test_a_proven_connection_is_never_evicted():
    adm = Admission(max_connections=3, per_source=3, max_unproven=3)
    adm.admit("terminal", "10.0.0.1", proven=False)
    adm.prove("terminal")
    adm.admit("x", "10.0.0.1", proven=False)
    adm.admit("y", "10.0.0.1", proven=False)
    assert adm.admit("z", "10.0.0.1", proven=False) == (True, ["x"])
    assert adm.admit("w", "10.0.0.1", proven=False) == (True, ["y"])
    assert adm.is_proven("terminal")


def test_per_source_cap_evicts_that_sources_oldest_or_refuses():
    adm = Admission(max_connections=10, per_source=2, max_unproven=10)
    adm.admit("a1", "A", proven=False)
    adm.admit("b1", "B", proven=False)
    adm.admit("a2", "A", proven=False)
    assert adm.admit("a3", "A", proven=False) == (True, ["a1"])  # not b1: other source
    adm.prove("a2")
    adm.prove("a3")
    assert adm.admit("a4", "A", proven=False) == (False, [])  # A holds 2 proven


def test_full_of_proven_connections_refuses():
    adm = Admission(max_connections=2, per_source=5, max_unproven=2)
    adm.admit("acq1", "A", proven=True)
    adm.admit("acq2", "B", proven=True)
    assert adm.admit("new", "C", proven=False) == (False, [])


def test_release_is_idempotent_and_frees_the_slot():
    adm = Admission(max_connections=1, per_source=1, max_unproven=1)
    adm.admit("a", "A", proven=True)
    adm.release("a")
    adm.release("a")
    assert adm.admit("b", "A", proven=True) == (True, [])


def test_malformed_window_slides():
    w = MalformedWindow(limit=3, window_s=10)
    assert [w.hit(t) for t in (0, 1, 2)] == [False, False, False]
    assert w.hit(3) is True  # 4 within 10 s
    assert w.hit(12.5) is False  # 0, 1, 2 have left the window (3, 12.5 remain)
    assert w.total == 5


def test_log_sampler_counts_what_it_skips():
    s = LogSampler(1.0)
    assert s.sample(0.0) == 0
    assert [s.sample(t) for t in (0.1, 0.2, 0.9)] == [None, None, None]
    assert s.sample(1.0) == 3
