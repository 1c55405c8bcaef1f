"""Prometheus metrics of one switch instance (its own registry, so that tests can run
several switches in one process). Served over HTTP when switch.metrics_port is set.

The alert rules and the dashboard in ops/ name these metrics; tests/ops checks that
every metric here is documented in ops/README.md and that every query names one of
them. Gauges read at scrape time (HSM queue, ledger writer queue, SAF and outbox
backlog) are hooked up by ``watch(switch)``.
"""

from __future__ import annotations

import functools
import math
import time
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LINK_STATES = {"down": 0, "connecting": 1, "signed_on": 2}
CHILDREN_CACHED = 4096  # per metric


class _Plain:
    """prometheus_client's value of one sample without its mutex (MutexValue's
    interface): for metrics changed only on the trio thread, where each request changes
    six of them. The HTTP thread only reads (a float read whole under the GIL)."""

    __slots__ = ("_value",)

    def __init__(self, *_: Any, **__: Any) -> None:
        self._value = 0.0

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def get(self) -> float:
        return self._value

    def set_exemplar(self, exemplar: Any) -> None:  # exemplars: not used by the switch
        pass

    def get_exemplar(self) -> None:
        return None


class TrioCounter(Counter):
    """A Counter whose children are changed only on the trio thread (the requests'
    counters): inc is one addition, not a method call under a mutex (the same samples
    and exposition; a negative amount still refused)."""

    def _metric_init(self) -> None:
        self._value = _Plain()
        self._created = time.time()

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self._value._value += amount


class TrioHistogram(Histogram):
    """A Histogram observed only on the trio thread (request and ledger-write
    durations): observe is a bisect over the bounds and two additions, not a loop
    over the buckets and two mutexes (the same samples and exposition)."""

    def _metric_init(self) -> None:
        self._created = time.time()
        self._sum = _Plain()
        self._buckets = [_Plain() for _ in self._upper_bounds]

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        self._sum._value += amount
        if amount == amount:  # NaN: in the sum, in no bucket (as prometheus_client)
            self._buckets[bisect_left(self._upper_bounds, amount)]._value += 1


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.attempts = TrioCounter("payment_attempts_total", "Requests received from terminals "
                                "and acquirers", ["mti"], registry=r)
        self.success = TrioCounter("payment_success_total", "Requests answered DE39 00",
                               ["mti"], registry=r)
        self.duration = TrioHistogram(
            "payment_processing_duration_seconds", "Time from request in to response out",
            ["mti"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.responses = TrioCounter("payment_responses_total", "Responses sent, by DE39",
                                 ["mti", "response_code"], registry=r)
        self.duplicates = TrioCounter("payment_duplicates_total", "Duplicates and repeats "
                                  "answered from the journal", registry=r)
        self.in_flight = Gauge("payment_in_flight", "Requests being processed", registry=r)
        self.link_requests = TrioCounter("link_requests_total", "Requests sent on an issuer link",
                                     ["link", "mti"], registry=r)
        self.link_responses = TrioCounter("link_responses_total", "Responses from an issuer link, "
                                      "by DE39", ["link", "response_code"], registry=r)
        self.link_timeouts = Counter("link_timeouts_total", "Requests sent that got no answer "
                                     "(timeout, link dropped, write failed)",
                                     ["link"], registry=r)
        self.link_late = Counter("link_late_responses_total", "Responses after their timeout",
                                 ["link"], registry=r)
        self.link_unmatched = Counter("link_unmatched_responses_total", "Responses that "
                                      "match no request", ["link"], registry=r)
        self.link_mac_failures = Counter("link_mac_failures_total", "Messages from an "
                                         "issuer link dropped for a missing or wrong MAC",
                                         ["link"], registry=r)
        self.terminal_mac_failures = Counter(
            "terminal_mac_failures_total", "Requests from a terminal with a TAK refused "
            "(DE39 63) for a missing or wrong MAC", ["terminal"], registry=r)
        self.hsm_errors = Counter("hsm_errors_total", "HSM operations that failed, by "
                                  "error type", ["error"], registry=r)
        self.link_in_flight = Gauge("link_in_flight", "Requests awaiting a response",
                                    ["link"], registry=r)
        self.link_state = Gauge("link_state", "0 down, 1 connecting, 2 signed on",
                                ["link"], registry=r)
        self.saf_sent = Counter("saf_sent_total", "Store-and-forward sends", ["link"],
                                registry=r)
        self.saf_done = Counter("saf_acknowledged_total", "Store-and-forward messages "
                                "acknowledged", ["link"], registry=r)
        self.saf_expired = Counter("saf_expired_total", "Store-and-forward messages given up",
                                   ["link"], registry=r)
        self.refused = Counter("connections_refused_total", "Connections refused",
                               ["listener", "reason"], registry=r)
        # Read at scrape time, see watch().
        self.hsm_refused = HsmRefusedCollector()
        r.register(self.hsm_refused)
        self.hsm_pending = Gauge("hsm_pending", "HSM calls waiting or running", registry=r)
        self.hsm_max_pending = Gauge("hsm_max_pending", "hsm.max_pending: past it a call "
                                     "fails at once with HsmBusyError", registry=r)
        self.ledger_queue = Gauge("ledger_writer_queue_depth", "Ledger write requests "
                                  "queued for the batch writer", registry=r)
        self.ledger_queue_max = Gauge("ledger_writer_queue_max", "ledger.queue_max",
                                      registry=r)
        self.ledger_write = TrioHistogram(
            "ledger_write_duration_seconds", "Time from a ledger write request to its "
            "committed outcome (queue wait + batch COMMIT)", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        # Exported now so that rules and dashboards can name them; driven by the
        # route-health (breakers) and risk-scoring work (issues still open).
        # (routing/health.py Breaker: open and half-open both refuse requests; risk
        # decisions as routing/risk_decision.py: approve / decline / refer, score 0-999)
        self.breaker_open = Gauge("link_breaker_open", "1 while the link's circuit "
                                  "breaker is open or half-open (requests not sent)",
                                  ["link"], registry=r)
        # routing/health.py LinkHealth, refreshed on every result and every probe tick
        # (rates over health.window_ms; they decay to 0 when nothing is sent)
        self.link_latency_ewma = Gauge("link_latency_ewma_seconds", "EWMA of the link's "
                                       "answer latency (health.ewma_alpha)", ["link"],
                                       registry=r)
        self.link_window_sent = Gauge("link_health_window_requests", "Requests sent on the "
                                      "link in the health window", ["link"], registry=r)
        self.link_timeout_rate = Gauge("link_timeout_rate", "Timeouts / sent in the health "
                                       "window", ["link"], registry=r)
        self.link_error_rate = Gauge("link_error_rate", "Errors (send failures, answers "
                                     "coded 30) / sent in the health window", ["link"],
                                     registry=r)
        self.link_approval_rate = Gauge("link_approval_rate", "Answers coded 00 / sent in "
                                        "the health window", ["link"], registry=r)
        self.risk_decisions = Counter("risk_decisions_total", "Risk decisions: approve, "
                                      "decline, refer", ["decision"], registry=r)
        self.risk_score = Histogram("risk_score", "Risk score of each scored request "
                                    "(0 good .. 999 fraud)", registry=r,
                                    buckets=(100, 200, 300, 400, 500, 600, 700, 800, 900, 999))

        # Labelled once per request or link message: each child is looked up once
        # (prometheus_client checks and locks on every labels() call). Label values
        # are bounded (MTIs, DE39 codes, configured links).
        for metric in (self.attempts, self.success, self.duration, self.responses,
                       self.link_requests, self.link_responses, self.link_in_flight):
            metric.labels = functools.lru_cache(maxsize=CHILDREN_CACHED)(  # type: ignore[method-assign,assignment]
                metric.labels)

    def watch(self, sw: Any) -> None:
        """Scrape-time gauges of a switch: its HSM queue, its ledger writer, and its SAF
        and outbox backlog read from PostgreSQL (bounded by the statement timeout). The
        outbox only with ``ledger.relay``: without it nothing is meant to publish it."""
        if sw.hsm is not None:
            self.hsm_refused.source = getattr(sw.hsm, "hsm", None)
            self.hsm_pending.set_function(lambda: sw.hsm.pending)
            self.hsm_max_pending.set(sw.hsm.max_pending)
        if sw.ledger is not None:
            self.watch_ledger(sw.ledger.writer)
        db = sw.cfg.database
        # whichever process relays (this one's thread, or serve's relay process)
        self.registry.register(BacklogCollector(db.resolve_dsn(), db.statement_timeout_ms,
                                                outbox=sw.cfg.ledger.enabled
                                                and sw.cfg.ledger.relay))

    def watch_ledger(self, writer: Any) -> None:
        self.ledger_queue.set_function(lambda: queue_depth(writer))
        self.ledger_queue_max.set(writer.config.queue_max)
        submit, hist = writer.submit, self.ledger_write

        async def timed_submit(request: Any, timeout_s: float | None = None) -> Any:
            started = time.monotonic()
            try:
                return await submit(request, timeout_s)
            finally:
                hist.observe(time.monotonic() - started)

        writer.submit = timed_submit

    def serve(self, host: str, port: int) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return server.server_address[1]

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()


def queue_depth(writer: Any) -> float:
    """Requests queued in a ledger BatchWriter (the length of its queue: safe to read
    from the HTTP thread); NaN for something without ``queue_depth()``, so that a scrape
    never fails on it."""
    depth = getattr(writer, "queue_depth", None)
    return float(depth()) if callable(depth) else math.nan


SAF_SQL = ("select link, count(*), extract(epoch from now() - min(created_at))"
           " from switch_saf where state = 'pending' group by link")
OUTBOX_SQL = ("select count(*), coalesce(extract(epoch from now() - min(e.occurred_at)), 0)"
              " from outbox o join events e on e.seq = o.event_seq where o.sent_at is null")


class HsmRefusedCollector:
    """hsm_refused_total{command}: commands the token's role refused (``Hsm.refused``,
    a Counter by command name kept by the HSM API), read when scraped."""

    def __init__(self) -> None:
        self.source: Any = None  # the sync hsm.Hsm

    def collect(self) -> list[CounterMetricFamily]:
        fam = CounterMetricFamily("hsm_refused", "HSM commands refused by the token's "
                                  "role (or a MAC of the wrong length), by command",
                                  labels=["command"])
        for command, n in sorted(dict(getattr(self.source, "refused", {})).items()):
            fam.add_metric([command], n)
        return [fam]


class BacklogCollector:
    """saf_pending / saf_oldest_age_seconds per link and the ledger outbox backlog, read
    from PostgreSQL when scraped (two small queries, at most one round per second)."""

    CACHE_S = 1.0

    def __init__(self, dsn: str, statement_timeout_ms: int, outbox: bool) -> None:
        self.dsn = dsn
        self.timeout_ms = min(statement_timeout_ms, 2000)
        self.outbox = outbox
        self._cached: tuple[float, list] = (-self.CACHE_S, [])

    @staticmethod
    def describe() -> list[GaugeMetricFamily]:
        """The families, empty: their names without a query."""
        return [
            GaugeMetricFamily("saf_pending", "Store-and-forward messages (reversals, "
                              "advices) not yet acknowledged", labels=["link"]),
            GaugeMetricFamily("saf_oldest_age_seconds", "Age of the oldest "
                              "unacknowledged store-and-forward message", labels=["link"]),
            GaugeMetricFamily("ledger_outbox_unsent", "Ledger events not yet published "
                              "to MQTT", labels=[]),
            GaugeMetricFamily("ledger_outbox_oldest_age_seconds", "Age of the oldest "
                              "unpublished ledger event", labels=[]),
            GaugeMetricFamily("backlog_query_up", "1 when the SAF/outbox backlog query "
                              "succeeded at this scrape", labels=[]),
        ]

    def collect(self) -> list:
        at, families = self._cached
        if time.monotonic() - at >= self.CACHE_S:
            families = self._query()
            self._cached = (time.monotonic(), families)
        return families

    def _query(self) -> list:
        import psycopg

        pending, oldest, unsent, outbox_age, up = self.describe()
        try:
            with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True,
                                 options=f"-c statement_timeout={self.timeout_ms}") as conn:
                for link, n, age in conn.execute(SAF_SQL).fetchall():
                    pending.add_metric([link], n)
                    oldest.add_metric([link], float(age))
                if self.outbox:
                    n, age = conn.execute(OUTBOX_SQL).fetchone() or (0, 0)
                    unsent.add_metric([], n)
                    outbox_age.add_metric([], float(age))
        except psycopg.Error:
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
        return [pending, oldest, unsent, outbox_age, up]


def exported() -> dict[str, str]:
    """{metric name as queried: type} of everything a switch exports (counters with
    their _total), without a database: for the ops/ cross-checks."""
    families = list(Metrics().registry.collect()) + BacklogCollector.describe()
    return {f.name + ("_total" if f.type == "counter" else ""): f.type for f in families}
