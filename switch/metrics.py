"""Prometheus metrics of one switch instance (its own registry, so that tests can run
several switches in one process). Served over HTTP when switch.metrics_port is set."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LINK_STATES = {"down": 0, "connecting": 1, "signed_on": 2}


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.attempts = Counter("payment_attempts_total", "Requests received from terminals "
                                "and acquirers", ["mti"], registry=r)
        self.success = Counter("payment_success_total", "Requests answered DE39 00",
                               ["mti"], registry=r)
        self.duration = Histogram(
            "payment_processing_duration_seconds", "Time from request in to response out",
            ["mti"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.responses = Counter("payment_responses_total", "Responses sent, by DE39",
                                 ["mti", "response_code"], registry=r)
        self.duplicates = Counter("payment_duplicates_total", "Duplicates and repeats "
                                  "answered from the journal", registry=r)
        self.in_flight = Gauge("payment_in_flight", "Requests being processed", registry=r)
        self.link_requests = Counter("link_requests_total", "Requests sent on an issuer link",
                                     ["link", "mti"], registry=r)
        self.link_responses = Counter("link_responses_total", "Responses from an issuer link, "
                                      "by DE39", ["link", "response_code"], registry=r)
        self.link_timeouts = Counter("link_timeouts_total", "Requests that timed out",
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

    def serve(self, host: str, port: int) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return server.server_address[1]

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
