"""Prometheus metrics of a network simulator (``payswitch simulate --metrics-port P``):
what it received and answered, read from its ``Stats`` at scrape time, so that an
operator can put the issuer's view next to the switch's link_* counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily

# Stats field -> (metric name without _total, help)
COUNTS = {
    "connections": ("simulator_connections", "Connections accepted from the switch"),
    "received": ("simulator_received", "Messages received"),
    "answered": ("simulator_answered", "Messages answered"),
    "silent": ("simulator_silent", "Requests deliberately never answered (test cards)"),
    "dropped": ("simulator_dropped", "Requests dropped (--drop-rate)"),
    "late": ("simulator_late", "Answers sent late (--late-rate)"),
    "link_drops": ("simulator_link_drops", "Links dropped (--link-drop-every)"),
    "format_errors": ("simulator_format_errors", "Messages that did not decode"),
    "mac_failures": ("simulator_mac_failures", "Messages with a missing or wrong MAC"),
}


class StatsCollector:
    def __init__(self, stats, network: str) -> None:
        self.stats = stats
        self.network = network

    def collect(self) -> list[CounterMetricFamily]:
        s, net = self.stats, [self.network]
        out = []
        for field, (name, doc) in COUNTS.items():
            fam = CounterMetricFamily(name, doc, labels=["network"])
            fam.add_metric(net, getattr(s, field))
            out.append(fam)
        by_mti = CounterMetricFamily("simulator_received_by_mti", "Messages received, by "
                                     "MTI", labels=["network", "mti"])
        for mti, n in sorted(dict(s.by_mti).items()):
            by_mti.add_metric([*net, mti], n)
        by_code = CounterMetricFamily("simulator_answered_by_code", "Answers sent, by DE39",
                                      labels=["network", "response_code"])
        for code, n in sorted(dict(s.by_code).items()):
            by_code.add_metric([*net, code], n)
        return [*out, by_mti, by_code]


def serve(stats, network: str, host: str, port: int) -> int:
    """Serves /metrics in a daemon thread; returns the bound port (0 = any free one)."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats, network))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server.server_address[1]
