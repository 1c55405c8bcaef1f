"""The scrape-time metrics the ops/ alert rules need: SAF backlog and its oldest item,
ledger writer queue and write latency, outbox lag; read over HTTP from a running switch
with a real PostgreSQL (and an MQTT broker that is down, so the outbox backs up)."""

from __future__ import annotations

import socket
import urllib.request

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from switchkit import (
    FakeIssuer,
    Terminal,
    approve,
    config_dict,
    purchase,
    running_switch,
    serving,
    trio_test,
)


@pytest.fixture(autouse=True)
def ledger_keys(monkeypatch):
    monkeypatch.setenv("PAYSWITCH_EVENT_MAC_KEY", "00112233445566778899aabbccddeeff")
    monkeypatch.setenv("PAYSWITCH_PAN_TOKEN_KEY", "ffeeddccbbaa99887766554433221100")


def free_port() -> int:
    """A loopback port nothing listens on (bound, read back, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback)
        text = resp.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, {})
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def silent_on(amount_minor: int):
    """Approves everything but requests of that amount (the switch sends its own STANs)
    and every reversal."""
    def answer(m):
        return None if m.mti.startswith("04") or m.amount_minor == amount_minor \
            else approve(m)
    return answer


@trio_test
async def test_metrics_show_saf_backlog_ledger_writer_and_outbox_lag(dsn):
    issuer = FakeIssuer(silent_on(4444))
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port, request_timeout_ms=500)
        cfg["switch"]["metrics_port"] = free_port()
        cfg["ledger"] = {"enabled": True, "currencies": ["EUR"], "max_wait_ms": 1,
                         "queue_max": 321, "relay": True, "mqtt_host": "127.0.0.1",
                         "mqtt_port": free_port()}  # no broker there: events back up
        async with running_switch(cfg) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            ok = await term.request(purchase(stan="000001"))
            lost = await term.request(purchase(stan="000002", amount=4444))
            await term.aclose()
            await trio.sleep(1.1)  # the oldest SAF row and event are more than 1 s old
            m = await trio.to_thread.run_sync(scrape, sw.metrics_port)
    assert (ok.response_code, lost.response_code) == ("00", "91")
    assert m["backlog_query_up"][()] == 1
    assert m["saf_pending"][(("link", "visa"),)] == 1  # the 0420 of the lost purchase
    assert m["saf_oldest_age_seconds"][(("link", "visa"),)] >= 1.0
    assert m["ledger_outbox_unsent"][()] >= 1  # the approval's events
    assert m["ledger_outbox_oldest_age_seconds"][()] >= 1.0
    assert m["ledger_writer_queue_max"][()] == 321
    assert m["ledger_writer_queue_depth"][()] == 0
    assert m["ledger_write_duration_seconds_count"][()] >= 1  # the approval's hold
    # exported before anything drives them, so rules and dashboards can name them
    for name in ("link_breaker_open", "risk_decisions", "risk_score"):
        assert name in m


@trio_test
async def test_backlog_query_down_is_reported_not_raised(dsn):
    issuer = FakeIssuer()
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port)
        cfg["switch"]["metrics_port"] = free_port()
        async with running_switch(cfg) as sw:
            from payswitch.switch.metrics import BacklogCollector

            collector = next(c for c in sw.metrics.registry._collector_to_names
                             if isinstance(c, BacklogCollector))
            collector.dsn = f"postgresql://127.0.0.1:{free_port()}/nothing"
            m = await trio.to_thread.run_sync(scrape, sw.metrics_port)
            await trio.sleep(1.05)
            m = await trio.to_thread.run_sync(scrape, sw.metrics_port)
    assert m["backlog_query_up"][()] == 0
    assert m["payment_in_flight"][()] == 0  # the rest of the page is still served
