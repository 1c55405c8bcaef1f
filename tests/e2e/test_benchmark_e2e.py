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
