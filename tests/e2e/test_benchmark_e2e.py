"""The e2e benchmark runs end to end (short): slow, so only in `make test-slow`."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_e2e_benchmark_short_run():
    from benchmarks import e2e

    result = e2e.run(seconds=2, terminals=2)
    for side in ("switch", "relay_baseline"):
        figures = result[side]
        assert figures["authorizations"] > 0 and figures["errors"] == 0
        assert figures["p99_ms"] >= figures["p50_ms"] > 0
        assert figures["cpu_us_per_auth"] > 0
    assert result["relay_over_switch_throughput"] > 0
    two = result["switch_by_workers"]["2"]
    assert two["authorizations"] > 0 and two["errors"] == 0 and two["speedup"] > 0


@pytest.mark.slow
def test_e2e_full_benchmark_short_run():
    """Full mode: PIN blocks translated, a MACed link, ledger holds; every answer an
    approval, the client a small share of a core, the relay measured in the same run."""
    from benchmarks import e2e_full

    result = e2e_full.run(seconds=2, terminals=2)
    assert result["mode"] == "full" and result["workers"] == 1
    switch, relay = result["switch"], result["relay_baseline"]
    assert switch["authorizations"] > 0 and switch["errors"] == 0
    assert set(switch["by_code"]) == {"00"}  # the issuers verified every PIN and CVV
    assert switch["p99_ms"] >= switch["p50_ms"] > 0
    assert switch["cpu_us_per_auth"] > 0 and relay["cpu_us_per_auth"] > 0
    assert 0 < switch["client_cpu_share"] < 1
    assert result["switch_over_relay_cpu_per_auth"] > 1
