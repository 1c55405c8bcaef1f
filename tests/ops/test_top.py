"""`payswitch top` against real metrics endpoints: switch Metrics registries served by
prometheus_client on 127.0.0.1 port 0, read over HTTP, drawn by rich into a string.
Its percentile interpolation is checked against Prometheus's own (promtool)."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess

import pytest
from opskit import payswitch, unused_port
from rich.console import Console

from payswitch.switch import top
from payswitch.switch.metrics import Metrics


@pytest.fixture
def workers():
    ms = [Metrics(), Metrics()]
    urls = [f"http://127.0.0.1:{m.serve('127.0.0.1', 0)}/metrics" for m in ms]
    yield ms, urls
    for m in ms:
        m.close()


def traffic(m: Metrics, approved: int, declined: int, code: str, slow: int = 0) -> None:
    for i in range(approved + declined):
        m.attempts.labels("0200").inc()
        m.responses.labels("0200", "00" if i < approved else code).inc()
        m.duration.labels("0200").observe(0.3 if i < slow else 0.004)
        m.link_requests.labels("visa", "0200").inc()


def text(group, width: int = 160) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(group)
    return console.export_text()


def test_top_sums_workers_over_http_and_shows_a_dead_one_as_down(workers):
    (a, b), urls = workers
    dead = f"http://127.0.0.1:{unused_port()}/metrics"
    for m in (a, b):
        m.link_state.labels("visa").set(2)
    a.link_state.labels("mastercard").set(2)
    b.link_state.labels("mastercard").set(0)  # one worker lost its Mastercard link
    b.link_timeouts.labels("visa").inc(3)
    prev = top.scrape_all([*urls, dead])
    traffic(a, approved=54, declined=6, code="05", slow=1)
    traffic(b, approved=36, declined=4, code="51")
    a.link_timeouts.labels("visa").inc(2)
    a.in_flight.inc(3)
    cur = top.scrape_all([*urls, dead])

    view = top.compute(prev, cur, dt_s=2.0)
    out = text(top.render(view, [*urls, dead]))

    assert view.auth_per_s == 50.0  # 100 authorizations in 2 s, both workers
    assert view.approval == 0.9
    assert "2/3 up" in out and "50.0" in out and "90.0%" in out
    assert f"down: {dead}" in out
    rows = {line.split()[1]: line for line in out.splitlines()
            if line.strip().startswith("│ visa") or line.strip().startswith("│ mastercard")}
    assert "signed_on" in rows["visa"] and "2 (5)" in rows["visa"]  # timeouts: 2 now, 5 ever
    assert "down" in rows["mastercard"]  # the worst worker's state
    codes = [line.split()[1] for line in out.split("response codes", 1)[1].splitlines()
             if line.startswith("│")]
    assert codes[:3] == ["00", "05", "51"]  # by rate in the interval
    assert view.p99_s is not None and 0.0025 < view.p50_s <= 0.005


def run_top(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(payswitch("top", *args), capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "140"})


def test_top_once_from_the_command_line(workers):
    (a, _b), urls = workers
    a.link_state.labels("visa").set(2)
    traffic(a, approved=3, declined=1, code="05")
    out = run_top("--once", "--interval", "0.1", *sum([["--url", u] for u in urls], []))
    assert out.returncode == 0, out.stderr
    assert "payswitch top" in out.stdout and "2/2 up" in out.stdout
    assert "signed_on" in out.stdout and "visa" in out.stdout


def test_top_exits_1_when_no_endpoint_answers():
    out = run_top("--once", "--interval", "0.1", "--url",
                  f"http://127.0.0.1:{unused_port()}/metrics")
    assert out.returncode == 1
    assert "0/1 up" in out.stdout


def _promtool_quantiles(cases: list[tuple[float, dict[str, float]]], tmp_path) -> None:
    """Asserts, through `promtool test rules`, that Prometheus's histogram_quantile
    gives top.quantile's value for each (q, buckets)."""
    lines = ["rule_files: []", "evaluation_interval: 1m", "tests:", "  - interval: 1m",
             "    input_series:"]
    tests = []
    for i, (q, buckets) in enumerate(cases):
        for le, n in buckets.items():
            lines += [f"      - series: 'h_bucket{{case=\"{i}\",le=\"{le}\"}}'",
                      f"        values: '{n:g}'"]
        tests += [f"      - expr: histogram_quantile({q}, h_bucket{{case=\"{i}\"}})",
                  "        eval_time: 0m",
                  "        exp_samples:",
                  f"          - labels: '{{case=\"{i}\"}}'",
                  f"            value: {top.quantile(q, buckets)!r}"]
    lines += ["    promql_expr_test:", *tests]
    (tmp_path / "q.test.yml").write_text("\n".join(lines) + "\n")
    exe = shutil.which("promtool")
    assert exe, "promtool not found: run `make setup`"
    out = subprocess.run([exe, "test", "rules", "q.test.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_quantile_matches_prometheus_histogram_quantile(tmp_path):
    rng = random.Random(14)
    bounds = ["0.001", "0.005", "0.01", "0.05", "0.1", "0.25", "0.5", "1", "+Inf"]
    cases = []
    for _ in range(40):
        counts, n = {}, 0
        for le in bounds:
            n += rng.choice([0, 0, 1, 3, 10, 50])
            counts[le] = n
        if n:
            cases.append((rng.choice([0.5, 0.9, 0.99, 0.999]), counts))
    cases.append((0.99, {"0.1": 0, "0.25": 0, "0.5": 100, "+Inf": 100}))  # 0.4975
    cases.append((0.99, {"0.1": 5, "+Inf": 100}))  # in +Inf: the highest finite bound
    _promtool_quantiles(cases, tmp_path)


def test_top_live_redraws_each_interval(workers):
    (a, _b), urls = workers
    a.link_state.labels("visa").set(2)
    traffic(a, approved=5, declined=0, code="05")
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    assert top.run(urls, 0.1, once=False, console=console, iterations=3) == 0
    # a frame per interval, drawn in place (cursor moved up between them); rich draws
    # the last one once more when the display stops
    assert out.getvalue().count("payswitch top") >= 3
    assert "\x1b[" in out.getvalue()
