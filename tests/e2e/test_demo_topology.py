"""The demo's switch config and its view of `serve --workers N`, without processes:
enough connections from 127.0.0.1 for every terminal, and per-link counters summed
over every worker's metrics endpoint (not the first worker's alone)."""

from __future__ import annotations

import contextlib
import http.server
import threading
import tomllib

from payswitch.lab import demo
from payswitch.switch import config


def _listener(terminals: int):
    cfg = config.parse(tomllib.loads(demo.demo_config(1, 2, terminals=terminals)))
    (pos,) = cfg.listeners
    return pos


def test_every_demo_terminal_and_the_feed_fit_under_the_per_source_caps():
    for terminals in (8, demo.DEMO_TERMINALS, 64, 200):
        pos = _listener(terminals)
        # all from 127.0.0.1, all connecting at once, none yet proven by a request;
        # and the fraud feed's links
        need = terminals + demo.FEED_LINKS
        assert pos.max_connections_per_source >= need, terminals
        assert pos.max_unproven_connections >= need, terminals
        assert pos.max_connections >= need, terminals


@contextlib.contextmanager
def _metrics_server(text: str):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _counter(n: int) -> str:
    return ("# TYPE link_requests counter\n"
            f'link_requests_total{{link="visa"}} {n}\n')


def test_per_link_figures_are_summed_over_every_worker():
    with _metrics_server(_counter(7)) as a, _metrics_server(_counter(5)) as b:
        topo = demo.Topology("127.0.0.1", 1, None, {}, metrics_port=a, metrics_ports=[a, b])
        assert demo.per_link(topo.metrics(), "visa")["requests"] == 12
        one = demo.Topology("127.0.0.1", 1, None, {}, metrics_port=a)
        assert demo.per_link(one.metrics(), "visa")["requests"] == 7
