"""The alert rules in ops/prometheus, checked and unit-tested by promtool itself.

promtool comes from Debian's `prometheus` package, which `make setup` installs: a
missing promtool fails these tests (it is not a reason to skip them).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

PROM = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
RULES = PROM / "payswitch.rules.yml"
RULE_TESTS = PROM / "payswitch.rules.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: run `make setup` (Debian package prometheus)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60,
                          cwd=PROM)


def test_rules_pass_promtool_check():
    out = promtool("check", "rules", RULES.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_rule_unit_tests_pass():
    out = promtool("test", "rules", RULE_TESTS.name)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rule_unit_tests_fail_when_a_rule_is_broken(tmp_path):
    """The unit tests can fail: with the p99 threshold at 2 s, the latency test does."""
    broken = RULES.read_text().replace("p99_5m > 0.2\n", "p99_5m > 2\n")
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    exe = shutil.which("promtool")
    assert exe
    out = subprocess.run([exe, "test", "rules", RULE_TESTS.name], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode != 0
    assert "AuthorizationLatencyP99High" in out.stdout + out.stderr


def _alerts() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"] for g in groups for r in g["rules"] if "alert" in r}


def test_every_alert_has_a_test_that_fires_it():
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for c in t.get("alert_rule_test", [])]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    assert _alerts() - fired == set()


def test_scrape_config_passes_promtool_check():
    out = promtool("check", "config", "scrape.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load((PROM / "scrape.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"payswitch", "simulators"}
    targets = [t for sc in jobs["payswitch"]["static_configs"] for t in sc["targets"]]
    assert len(targets) > 1  # one per worker
