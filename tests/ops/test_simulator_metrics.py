"""`payswitch simulate --metrics-port 0`: the issuer's own counts over HTTP, as the
scrape config in ops/prometheus expects them."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

from opskit import payswitch
from prometheus_client.parser import text_string_to_metric_families


def samples(port: int) -> dict[tuple, float]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback)
        text = resp.read()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text.decode()) for s in f.samples}


def test_simulator_serves_its_counts():
    proc = subprocess.Popen(payswitch("simulate", "--network", "mastercard", "--port", "0",
                                      "--metrics-port", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ports = {}
        for _ in range(5):  # bounded: the metrics line, then the ready line
            line = proc.stdout.readline()
            if "port=" in line:
                ports["metrics" if "metrics" in line else "sim"] = int(line.rsplit("=", 1)[1])
            if "ready" in line:
                break
        before = samples(ports["metrics"])
        with socket.create_connection(("127.0.0.1", ports["sim"]), timeout=5):
            deadline = time.monotonic() + 5
            key = ("simulator_connections_total", (("network", "mastercard"),))
            while samples(ports["metrics"])[key] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            after = samples(ports["metrics"])
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
    assert before[key] == 0
    assert after[key] == 1
    assert after[("simulator_received_total", (("network", "mastercard"),))] == 0
