"""The Grafana dashboard and the alert rules name only metrics the switch exports, and
every exported metric (switch and simulators) is documented in ops/README.md."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import yaml

from payswitch.simulators.metrics import COUNTS
from payswitch.switch.metrics import exported

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "dashboard.json"
RULES = ROOT / "ops" / "prometheus" / "payswitch.rules.yml"
README = ROOT / "ops" / "README.md"

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan"}
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (in {} or in by/without/on/ignoring lists) or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges, subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ",
                  expr)
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    expr = re.sub(r"\$\w+", " ", expr)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[m.end():].lstrip()
        word = m.group()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def known(name: str, metrics: dict[str, str]) -> bool:
    if name in metrics:
        return True
    return any(name.endswith(s) and metrics.get(name[: -len(s)]) == "histogram"
               for s in HISTOGRAM_SERIES)


def dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def test_metric_names_parser():
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{mti=~"0[12]"}'
                        '[5m])))') == {"a_bucket"}
    assert metric_names('sum by (link) (rate(x_total{code="00"}[1m])) / ignoring (code) '
                        'group_left sum(y) > 0.5 and on (job) z offset 10m') == {
                            "x_total", "y", "z"}


def test_every_dashboard_query_names_an_exported_metric():
    metrics = exported()
    exprs = dashboard_exprs()
    assert len(exprs) >= 25
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        unknown = {n for n in names if not known(n, metrics)}
        assert not unknown, f"{expr}: {unknown}"


def test_dashboard_has_the_rows_an_operator_needs():
    d = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    for word in ("Traffic", "Latency", "Links", "Store-and-forward", "Ledger", "HSM", "Risk"):
        assert any(word in r for r in rows), word
    assert any(p["type"] == "heatmap" for p in d["panels"])
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_json_is_what_its_script_writes():
    spec = importlib.util.spec_from_file_location("ops_dashboard",
                                                  DASHBOARD.with_name("dashboard.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == DASHBOARD.read_text(), "run python ops/grafana/dashboard.py"


def test_every_rule_names_an_exported_or_recorded_metric():
    metrics = exported()
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    for r in rules:
        unknown = {n for n in metric_names(r["expr"])
                   if not known(n, metrics) and n not in recorded and n != "up"}
        assert not unknown, f"{r.get('alert') or r.get('record')}: {unknown}"


def documented() -> set[str]:
    """Names in the first column of the tables under "## Metrics" in ops/README.md."""
    text = README.read_text().split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_:]+)`", text, re.MULTILINE))


def test_every_exported_metric_is_documented():
    names = set(exported()) | {f"{n}_total" for n, _ in COUNTS.values()} | {
        "simulator_received_by_mti_total", "simulator_answered_by_code_total"}
    assert names - documented() == set()
    assert documented() - names == set()  # and nothing documented that is not exported
