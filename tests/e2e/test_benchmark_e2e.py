"""The e2e benchmark runs end to end (short): slow, so only in `make test-slow`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
    """Full mode, by the README's command in a process of its own (it opens SoftHSM
    tokens of its own, and SoftHSM takes one configuration per process): PIN blocks
    translated, a MACed link, ledger holds; every answer an approval, the client a small
    share of a core, the relay measured in the same run."""
    env = {**os.environ, "PAYSWITCH_BENCH_SECONDS": "2", "PAYSWITCH_BENCH_TERMINALS": "2"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.run", "e2e", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                         check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["mode"] == "full" and result["workers"] == 1
    switch, relay = result["switch"], result["relay_baseline"]
    assert switch["authorizations"] > 0 and switch["errors"] == 0
    assert set(switch["by_code"]) == {"00"}  # the issuers verified every PIN and CVV
    assert switch["p99_ms"] >= switch["p50_ms"] > 0
    assert switch["cpu_us_per_auth"] > 0 and relay["cpu_us_per_auth"] > 0
    assert 0 < switch["client_cpu_share"] < 1
    assert result["switch_over_relay_cpu_per_auth"] > 1
