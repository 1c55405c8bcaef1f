"""Writes ops/grafana/dashboard.json (Grafana 10+, one Prometheus datasource chosen at
import). Edit the panels here and run `python ops/grafana/dashboard.py`; a test checks
the JSON is what this script writes and that every query names an exported metric.

Authorizations are MTIs 0100/0101/0200/0201; approved = 00, 08, 10, 11 (as the alert
rules in ops/prometheus). Queries sum over instances, so N workers show as one switch.
"""

from __future__ import annotations

import json
from pathlib import Path

AUTH = 'mti=~"0[12]0[01]"'
APPROVED = 'response_code=~"00|08|10|11"'
DS = {"type": "prometheus", "uid": "${datasource}"}


def target(expr: str, legend: str = "", fmt: str = "time_series") -> dict:
    t = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto",
         "refId": "", "format": fmt}
    if fmt == "heatmap":
        t["interval"] = "30s"
    return t


def panel(title: str, targets: list[dict], kind: str = "timeseries", unit: str = "short",
          width: int = 8, desc: str = "") -> dict:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    p = {"type": kind, "title": title, "description": desc, "datasource": DS,
         "targets": targets, "gridPos": {"w": width, "h": 8},
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}}
    if kind == "heatmap":
        p["options"] = {"calculate": False, "yAxis": {"unit": unit},
                        "cellGap": 1, "color": {"scheme": "Oranges", "mode": "scheme"}}
    return p


def rows() -> list[tuple[str, list[dict]]]:
    lat = "payment_processing_duration_seconds_bucket"
    return [
        ("Traffic and approval rate", [
            panel("Authorizations/s by network", [
                target(f'sum by (link) (rate(link_requests_total{{{AUTH}}}[1m]))', "{{link}}"),
                target(f'sum(rate(payment_attempts_total{{{AUTH}}}[1m]))', "all (incl. on-us)"),
            ], unit="reqps", desc="Requests from terminals and acquirers, and those "
                                  "forwarded to each issuer network"),
            panel("Approval rate by network", [
                target(f'sum by (link) (rate(link_responses_total{{{APPROVED}}}[5m])) / '
                       'sum by (link) (rate(link_responses_total[5m]))', "{{link}}"),
                target(f'sum(rate(payment_responses_total{{{AUTH},{APPROVED}}}[5m])) / '
                       f'sum(rate(payment_responses_total{{{AUTH}}}[5m]))', "switch"),
            ], unit="percentunit", desc="Share of answers approved (00, 08, 10, 11)"),
            panel("Responses by code", [
                target('sum by (response_code) (rate(payment_responses_total[1m]))',
                       "{{response_code}}"),
            ], unit="reqps", desc="DE39 of every answer the switch sent"),
            panel("Issuer answers by network and code", [
                target('sum by (link, response_code) (rate(link_responses_total[1m]))',
                       "{{link}} {{response_code}}"),
            ], unit="reqps", width=12),
            panel("Duplicates, replays (94), refused connections", [
                target('sum(rate(payment_duplicates_total[1m]))', "duplicates and repeats"),
                target('sum(rate(payment_responses_total{response_code="94"}[1m]))',
                       "94 same key, other card"),
                target('sum by (reason) (rate(connections_refused_total[1m]))',
                       "refused: {{reason}}"),
            ], unit="reqps", width=12),
        ]),
        ("Latency", [
            panel("Authorization latency (heatmap)", [
                target(f'sum by (le) (increase({lat}{{{AUTH}}}[$__rate_interval]))',
                       "{{le}}", fmt="heatmap"),
            ], kind="heatmap", unit="s", width=12),
            panel("Authorization p50 / p99 (SLO: p99 < 200 ms)", [
                target(f'histogram_quantile(0.5, sum by (le) (rate({lat}{{{AUTH}}}[5m])))',
                       "p50"),
                target(f'histogram_quantile(0.99, sum by (le) (rate({lat}{{{AUTH}}}[5m])))',
                       "p99"),
            ], unit="s", width=12),
            panel("In flight", [target("sum(payment_in_flight)", "requests in flight")],
                  width=24),
        ]),
        ("Links and breakers", [
            panel("Link state (0 down, 1 connecting, 2 signed on)", [
                target("min by (link) (link_state)", "{{link}}"),
            ]),
            panel("Breaker open", [target("max by (link) (link_breaker_open)", "{{link}}")]),
            panel("Link health: timeout, error and approval rates (breaker window)", [
                target("max by (link) (link_timeout_rate)", "timeouts {{link}}"),
                target("max by (link) (link_error_rate)", "errors {{link}}"),
                target("avg by (link) (link_approval_rate)", "approved {{link}}"),
            ], unit="percentunit", width=12),
            panel("Link latency (EWMA) and window requests", [
                target("max by (link) (link_latency_ewma_seconds)", "EWMA {{link}}"),
                target("sum by (link) (link_health_window_requests)", "sent {{link}}"),
            ], width=12),
            panel("In flight per link", [
                target("sum by (link) (link_in_flight)", "{{link}}")]),
            panel("Timeouts, late and unmatched answers", [
                target("sum by (link) (rate(link_timeouts_total[1m]))", "timeouts {{link}}"),
                target("sum by (link) (rate(link_late_responses_total[1m]))",
                       "late {{link}}"),
                target("sum by (link) (rate(link_unmatched_responses_total[1m]))",
                       "unmatched {{link}}"),
            ], unit="reqps", width=12),
            panel("MAC failures", [
                target("sum by (link) (rate(link_mac_failures_total[1m]))", "{{link}}"),
            ], unit="reqps", width=12),
        ]),
        ("Store-and-forward (reversals, advices)", [
            panel("Backlog", [target("max by (link) (saf_pending)", "{{link}}")]),
            panel("Oldest unacknowledged", [
                target("max by (link) (saf_oldest_age_seconds)", "{{link}}")], unit="s"),
            panel("Sent, acknowledged, expired", [
                target("sum by (link) (rate(saf_sent_total[1m]))", "sent {{link}}"),
                target("sum by (link) (rate(saf_acknowledged_total[1m]))", "acked {{link}}"),
                target("sum by (link) (rate(saf_expired_total[1m]))", "expired {{link}}"),
            ], unit="reqps"),
        ]),
        ("Ledger and outbox", [
            panel("Writer queue", [
                target("sum by (instance) (ledger_writer_queue_depth)", "depth {{instance}}"),
                target("max(ledger_writer_queue_max)", "queue_max"),
            ]),
            panel("Ledger write p50 / p99", [
                target("histogram_quantile(0.5, sum by (le) "
                       "(rate(ledger_write_duration_seconds_bucket[5m])))", "p50"),
                target("histogram_quantile(0.99, sum by (le) "
                       "(rate(ledger_write_duration_seconds_bucket[5m])))", "p99"),
            ], unit="s"),
            panel("Outbox: unpublished events and the oldest one's age", [
                target("max(ledger_outbox_unsent)", "unsent"),
                target("max(ledger_outbox_oldest_age_seconds)", "oldest (s)"),
                target("min(backlog_query_up)", "backlog query up"),
            ]),
        ]),
        ("HSM", [
            panel("Queue (busy past max_pending)", [
                target("sum by (instance) (hsm_pending)", "pending {{instance}}"),
                target("max(hsm_max_pending)", "max_pending"),
            ], width=12),
            panel("Errors by type", [
                target("sum by (error) (rate(hsm_errors_total[1m]))", "{{error}}"),
            ], unit="reqps", width=12),
        ]),
        ("Risk", [
            panel("Decisions", [
                target("sum by (decision) (rate(risk_decisions_total[1m]))", "{{decision}}"),
            ], unit="reqps", width=12),
            panel("Risk score (heatmap)", [
                target("sum by (le) (increase(risk_score_bucket[$__rate_interval]))",
                       "{{le}}", fmt="heatmap"),
            ], kind="heatmap", width=12),
        ]),
    ]


def dashboard() -> dict:
    panels, y, pid = [], 0, 1
    for title, members in rows():
        panels.append({"type": "row", "title": title, "id": pid, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        pid, y, x = pid + 1, y + 1, 0
        for p in members:
            w = p["gridPos"]["w"]
            if x + w > 24:
                x, y = 0, y + 8
            p["gridPos"].update(x=x, y=y)
            p["id"] = pid
            pid, x = pid + 1, x + w
            panels.append(p)
        y += 8
    return {
        "title": "payswitch", "uid": "payswitch-overview", "tags": ["payswitch"],
        "timezone": "utc", "schemaVersion": 39, "version": 1, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"}, "editable": True,
        "templating": {"list": [{"name": "datasource", "type": "datasource",
                                 "query": "prometheus", "label": "Prometheus"}]},
        "annotations": {"list": []},
        "panels": panels,
    }


PATH = Path(__file__).with_name("dashboard.json")


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    PATH.write_text(render())
    print(PATH)
