"""`payswitch demo`: the whole thing on one machine, as separate processes.

PostgreSQL (``PAYSWITCH_PG_DSN``, else a scratch database on a reachable or private
server), the Visa and Mastercard network simulators (``payswitch simulate``), the
switch (``payswitch serve --config``, config written to a temp dir) and, in this
process, the terminal load generator with mixed POS/ATM traffic, some declines and
some cards the issuer never answers. Then SIGTERM to everything and a report.

HSMs: three SoftHSM tokens are made in the temp dir first (``devkeys.make_dev_tokens``:
switch, issuer, terminal, TEST keys only); ``SOFTHSM2_CONF`` and the PIN reach the
switch and simulator processes through their environment. The terminals build real
PIN blocks (TPK; every 4th terminal TDES DUKPT), CVVs and ARQCs; the switch translates
PINs to each link's ZPK and MACs the Visa link; the simulators verify PIN (PVV),
CVV/iCVV and ARQC and answer ARPCs. Wrong-PIN cards get 55 (``pin_declines``).

At the end, clearing posts every approved hold and ``ledger verify`` runs (report keys
``ledger_balanced``, ``ledger_verify_ok``, ``ledger``). Exit 0 only when something was
approved, nothing broke (``errors == 0``) and the ledger verifies clean. Every
process, the temp dir and the scratch database are cleaned up, also on failure.

The process helpers (``Proc``, ``start_simulator``, ``start_switch``, ``demo_config``)
are shared with the e2e tests and the e2e benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import trio

from payswitch.hsm import devkeys
from payswitch.lab import riskdemo
from payswitch.lab.realparts import free_port
from payswitch.simulators import cards

DUKPT_EVERY = 4  # DEMO0004, DEMO0008...: TDES DUKPT PIN pads; the others a TPK
MAC_LINKS = ("visa",)  # links that MAC every message (DE64/DE128) in the demo
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
TERMINALS = 16
# `payswitch demo`'s closed-loop terminals (README.md, "What `make demo` does": the
# sweep). With 8 the switch waited on them (each card no issuer answers holds one for
# the 2 s timeout); from 32 on the one switch worker is at its ceiling and more only
# add latency, and with it more of the paced fraud feed in flight at once, which the
# risk windows then see in a less faithful order (recall 0.71 in 2 of 4 runs at 48)
DEMO_TERMINALS = 32


class DemoError(RuntimeError):
    pass


class Proc:
    """A child process whose stdout is read line by line in a thread (so its pipe never
    fills) and whose stderr goes to a file; stopped by SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log_dir: str,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self._log = open(self.log_path, "w+b")  # noqa: SIM115 (closed in stop)
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log,
                                      env=env, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        for raw in self.popen.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stdout.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, prefix: str, timeout_s: float = READY_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoError(f"{self.name}: no '{prefix}' line within {timeout_s:.0f} s"
                                f"{self.tail()}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise DemoError(f"{self.name} exited ({self.popen.wait()}) before it was "
                                f"ready{self.tail()}")
            if line.startswith(prefix):
                return line

    def tail(self, n: int = 20) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()[-n:]
        return ("\n  " + "\n  ".join(lines)) if lines else ""

    def stderr_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(2)
        if not self._reader.is_alive():
            self.popen.stdout.close()
        self._log.close()
        return self.popen.returncode


def payswitch_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "payswitch.lab.cli", *args]


def start_simulator(stack: contextlib.ExitStack, network: str, log_dir: str,
                    *extra: str, env: dict[str, str] | None = None) -> tuple[Proc, int]:
    proc = Proc(f"sim-{network}", payswitch_argv("simulate", "--network", network,
                                                 "--port", "0", *extra), log_dir, env)
    stack.callback(proc.stop)
    line = proc.wait_for_line("payswitch-sim ready")
    return proc, int(line.rsplit("port=", 1)[1])


def parse_ready(line: str) -> dict[str, tuple[str, int]]:
    """The switch's ready line -> {listener name: (host, port)}.

    ``payswitch ready {"listeners": {"pos": 40123}, ...}`` (what `serve` prints), or the
    older contract form ``payswitch ready listeners=pos:127.0.0.1:9100,...``.
    """
    rest = line.removeprefix("payswitch ready").strip()
    if rest.startswith("{"):
        ports = json.loads(rest)["listeners"]
        return {name: ("127.0.0.1", int(port)) for name, port in ports.items()}
    spec = rest.split("listeners=", 1)[1].split()[0]
    out = {}
    for item in spec.split(","):
        name, host, port = item.rsplit(":", 2)
        out[name] = (host, int(port))
    return out


def start_switch(stack: contextlib.ExitStack, config_path: str, log_dir: str,
                 dsn: str, env: dict[str, str] | None = None, workers: int = 1,
                 ) -> tuple[Proc, dict[str, tuple[str, int]]]:
    env = {**os.environ, **(env or {}), "PAYSWITCH_PG_DSN": dsn}
    extra = ["--workers", str(workers)] if workers > 1 else []
    proc = Proc("switch", payswitch_argv("serve", "--config", config_path, *extra), log_dir,
                env)
    stack.callback(proc.stop)
    line = proc.wait_for_line("payswitch ready")
    proc.ready_line = line
    return proc, parse_ready(line)


# Mastercard's 2-series, 2221-2720, as the fewest prefixes.
MASTERCARD_PREFIXES = (
    [str(p) for p in range(51, 56)] + [str(p) for p in range(2221, 2230)]
    + [str(p) for p in range(223, 230)] + [str(p) for p in range(23, 27)]
    + ["270", "271", "2720"]
)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def demo_config(visa_port: int, mastercard_port: int, *, terminals: int = TERMINALS,
                issuer_timeout_ms: int = 2000, framing: str = "len2",
                name: str = "payswitch-demo", echo_interval_ms: int = 30_000,
                metrics_port: int = 0, hsm_token: str | None = None,
                dukpt_every: int = DUKPT_EVERY, mac_links: tuple[str, ...] = MAC_LINKS,
                ledger: bool = False, pos_port: int = 0,
                ledger_relay: tuple[str, int, str] | None = None,
                risk: list[str] | None = None) -> str:
    """The switch config (keys as switch/config.py reads them) for this topology.

    With ``hsm_token``: the [hsm] section, the terminals' PIN keys (TPK; DEMOnnnn with
    nnnn divisible by ``dukpt_every``: TDES DUKPT), each link's ZPK, and a MAC on the
    links in ``mac_links``. With ``ledger``: the [ledger] section and the demo's on-us
    range (ONUS_PREFIX)."""
    lines = [
        "[switch]", f"name = {_toml_str(name)}", 'metrics_host = "127.0.0.1"',
        f"metrics_port = {metrics_port}", "drain_timeout_ms = 5000",
        *([riskdemo.SWITCH_LINE] if risk else []), "",
        "[database]", 'dsn_env = "PAYSWITCH_PG_DSN"', "",
        "[saf]", "retry_interval_ms = 1000", "max_attempts = 50", "expiry_s = 86400", "",
        "[[listeners]]", 'name = "pos"', 'host = "127.0.0.1"', f"port = {pos_port}",
        'kind = "terminal"', 'dialect = "iso87ascii"', f"framing = {_toml_str(framing)}",
        "max_frame_bytes = 4096",
        # every demo terminal and the fraud feed's links come from 127.0.0.1, all
        # connecting at once: past the per-source caps (64) the oldest would be closed
        f"max_connections = {max(256, terminals + 64)}",
        f"max_connections_per_source = {terminals + 64}",
        f"max_unproven_connections = {terminals + 64}",
    ]
    if hsm_token:
        lines += [f"pin_key = {_toml_str(devkeys.TPK)}"]
        lines[lines.index("[saf]"):lines.index("[saf]")] = [
            "[hsm]", f"token = {_toml_str(hsm_token)}", 'pin_env = "PAYSWITCH_HSM_PIN"', ""]
    lines.append("")
    for i in range(1, terminals + 1):
        lines += ["[[terminals]]", f'id = "DEMO{i:04d}"', 'source = "127.0.0.1"']
        if hsm_token and dukpt_every and i % dukpt_every == 0:
            lines += [f"pin_key = {_toml_str(devkeys.BDK)}", 'pin_mode = "dukpt"']
        lines.append("")
    for link, port, dialect, framing_ in (
        ("visa", visa_port, "visa", "vap"),
        ("mastercard", mastercard_port, "mastercard", "len2"),
    ):
        lines += ["[[links]]", f'name = "{link}"', 'host = "127.0.0.1"', f"port = {port}",
                  f'dialect = "{dialect}"', f'framing = "{framing_}"',
                  f"echo_interval_ms = {echo_interval_ms}",
                  f"request_timeout_ms = {issuer_timeout_ms}", "max_in_flight = 256",
                  "reconnect_min_ms = 100", "reconnect_max_ms = 5000"]
        if hsm_token:
            lines += [f"zpk = {_toml_str(devkeys.zpk(link))}",  # zmk: 0800 key changes
                      f"zmk = {_toml_str(devkeys.zmk(link))}", "key_grace_ms = 60000"]
            if link in mac_links:
                lines += [f"zak = {_toml_str(devkeys.zak(link))}", "mac = true"]
        lines.append("")
    lines += ["[[routes]]", 'prefix = "4"', 'link = "visa"', ""]
    for prefix in MASTERCARD_PREFIXES:
        lines += ["[[routes]]", f'prefix = "{prefix}"', 'link = "mastercard"', ""]
    lines += risk or []  # lab/riskdemo.py: [risk], [routing], the fraud feed's terminals
    if ledger:
        lines += ["[ledger]", "enabled = true", 'currencies = ["USD"]', "max_wait_ms = 1"]
        if ledger_relay:  # (MQTT host, port, topic prefix)
            lines += ["relay = true", f"mqtt_host = {_toml_str(ledger_relay[0])}",
                      f"mqtt_port = {ledger_relay[1]}",
                      f"topic_prefix = {_toml_str(ledger_relay[2])}"]
        lines += ["", "[[onus]]", f"prefix = {_toml_str(ONUS_PREFIX)}", 'currency = "USD"',
                  f"opening_balance_minor = {ONUS_OPENING_MINOR}", ""]
    return "\n".join(lines)


# The demo's on-us card: the simulators' test card mastercard_approve_2 is issued by
# the switch itself: authorized against its ledger account, never sent out. Its number
# stays in the simulators' card table (no card numbers outside tests and simulators).
ONUS_PREFIX = cards.card("mastercard_approve_2").pan[:-1]
ONUS_OPENING_MINOR = 50_000_000  # 500,000.00 USD: the demo never runs it dry


@contextlib.contextmanager
def demo_database(dsn: str | None = None) -> Iterator[str]:
    """``dsn``, else PAYSWITCH_PG_DSN as given, else a scratch database (dropped on exit)."""
    dsn = dsn or os.environ.get("PAYSWITCH_PG_DSN")
    if dsn:
        yield dsn
        return
    from payswitch.lab import realparts

    with realparts.postgres_server() as admin, \
            realparts.scratch_database(admin, prefix="payswitch_demo") as scratch:
        yield scratch


@dataclass
class Topology:
    host: str
    port: int
    switch: Proc
    simulators: dict[str, Proc]
    metrics_port: int = 0
    dsn: str = ""
    ledger_env: dict[str, str] | None = None  # the switch's ledger keys (event MAC, PAN)
    metrics_ports: list[int] | None = None  # `serve --workers N`: one per worker

    def saf_pending(self) -> dict[str, int] | None:
        """Reversals/advices not yet acknowledged, per link, from the switch's own
        store-and-forward table (None when it cannot be read)."""
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                rows = conn.execute("select link, count(*) from switch_saf"
                                    " where state = 'pending' group by link").fetchall()
        except psycopg.Error:
            return None
        return {link: int(n) for link, n in rows}

    def metrics(self) -> dict[str, dict[tuple, float]]:
        """The switch's Prometheus samples: {name: {labels tuple: value}} ({} if none)."""
        out: dict[str, dict[tuple, float]] = {}
        for port in self.metrics_ports or ([self.metrics_port] if self.metrics_port else []):
            for name, samples in scrape_metrics(port).items():  # counters: summed
                into = out.setdefault(name, {})
                for labels, value in samples.items():
                    into[labels] = into.get(labels, 0.0) + value
        return out


def scrape_metrics(port: int, timeout_s: float = 5.0) -> dict[str, dict[tuple, float]]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (loopback)
        text = resp.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def per_link(samples: dict[str, dict[tuple, float]], link: str) -> dict:
    """The switch's view of one issuer link, from its metrics."""
    def total(name: str, **match: str) -> int:
        return int(sum(v for labels, v in samples.get(name, {}).items()
                       if all(dict(labels).get(k) == m for k, m in match.items())))

    codes = {dict(labels)["response_code"]: int(v)
             for labels, v in samples.get("link_responses_total", {}).items()
             if dict(labels).get("link") == link}
    return {
        "requests": total("link_requests_total", link=link),
        "responses_by_code": dict(sorted(codes.items())),
        "timeouts": total("link_timeouts_total", link=link),
        "late": total("link_late_responses_total", link=link),
        "saf_sent": total("saf_sent_total", link=link),
        "saf_acknowledged": total("saf_acknowledged_total", link=link),
    }


@contextlib.contextmanager
def running_topology(log_dir: str, *, terminals: int = TERMINALS,
                     sim_args: dict[str, list[str]] | None = None,
                     issuer_timeout_ms: int = 2000, dsn: str | None = None,
                     metrics: bool = False, hsm: dict | None = None,
                     ledger: bool = False,
                     mqtt: tuple[str, int] | None = None,
                     workers: int = 1, risk: list[str] | None = None,
                     ) -> Iterator[Topology]:
    """Database, both simulators and the switch as processes; all stopped on exit.

    ``hsm``: the token configs of ``devkeys.make_dev_tokens`` (switch, issuer): the
    processes get SOFTHSM2_CONF and the PIN in their environment, the switch its
    [hsm] config, the simulators their issuer token (and a MAC on MAC_LINKS).
    ``ledger``: the switch writes holds and events (event MAC key made up for this run;
    the PAN token key too, used only without ``hsm``). ``mqtt``: (host, port) of a broker
    the switch's outbox relay publishes the ledger events to (topic prefix per run)."""
    sim_args = sim_args or {}
    env = None
    if hsm:
        env = {**os.environ, "SOFTHSM2_CONF": hsm["switch"].conf,
               "PAYSWITCH_HSM_PIN": hsm["switch"].pin}
    with demo_database(dsn) as dsn, contextlib.ExitStack() as stack:
        sims, ports = {}, {}
        for network in ("visa", "mastercard"):
            extra = list(sim_args.get(network, []))
            if hsm:
                extra += ["--hsm-token", hsm["issuer"].label]
                extra += ["--mac"] if network in MAC_LINKS else []
            sims[network], ports[network] = start_simulator(
                stack, network, log_dir, *extra, env=env)
        config_path = os.path.join(log_dir, "payswitch.toml")
        with open(config_path, "w") as f:
            f.write(demo_config(ports["visa"], ports["mastercard"], terminals=terminals,
                                issuer_timeout_ms=issuer_timeout_ms,
                                metrics_port=(int(os.environ.get(  # ops/README.md
                                    "PAYSWITCH_DEMO_METRICS_PORT") or 0) or free_port())
                                if metrics else 0,
                                hsm_token=hsm["switch"].label if hsm else None,
                                ledger=ledger, risk=risk,
                                ledger_relay=(*mqtt, f"demo-{secrets.token_hex(4)}/")
                                if mqtt and ledger else None))
        ledger_env = ({"PAYSWITCH_EVENT_MAC_KEY": secrets.token_hex(32),
                       "PAYSWITCH_PAN_TOKEN_KEY": secrets.token_hex(32)} if ledger else None)
        switch, listeners = start_switch(stack, config_path, log_dir, dsn,
                                         {**(env or {}), **(ledger_env or {})},
                                         workers=workers)
        host, port = listeners["pos"]
        ready = switch.ready_line.removeprefix("payswitch ready").strip()
        info = json.loads(ready) if ready.startswith("{") else {}
        yield Topology(host, port, switch, sims, info.get("metrics_port", 0), dsn, ledger_env,
                       [p for p in info.get("metrics_ports", []) if p] or None)


def _sim_stats(proc: Proc) -> dict:
    """The JSON line a simulator prints on stderr when it stops."""
    for line in reversed(proc.stderr_text().splitlines()):
        with contextlib.suppress(ValueError):
            d = json.loads(line)
            if isinstance(d, dict) and "by_mti" in d:
                return d
    return {}


def _settle_saf(topo: Topology, wait_s: float = 5.0) -> dict[str, dict]:
    """Per-link figures from the switch's metrics, once its store-and-forward queue is
    empty (every reversal acknowledged by its issuer) or ``wait_s`` has passed."""
    deadline = time.monotonic() + wait_s
    while True:
        pending = topo.saf_pending()
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    try:
        samples = topo.metrics()
    except OSError:
        samples = {}
    links = {name: per_link(samples, name) for name in topo.simulators}
    for name, figures in links.items():
        figures["saf_pending"] = (pending or {}).get(name, 0) if pending is not None else None
    return links


FEED_SHARE_OF_WINDOW = 0.9  # the fraud feed is sent over this part of the traffic window
# its connections, one request in flight on each, each card's requests on one of them
# (send_feed: the risk windows see a card's requests in order; sharing the links, the
# 20-30 in flight at once cost recall, 0.60-0.80 against main's 0.77-0.80); enough to
# keep its pace while the terminals queue at the switch (4 kept up with 8 terminals,
# fell behind with 32-48: done in 31-42 s instead of inside the 20 s window)
FEED_LINKS = 32


# --faults: Visa drops its link every 300 messages and answers 1% late (after the
# switch's 2 s timeout); Mastercard silently drops 1%. The switch must turn all of it
# into 91s and reversals, never into errors.
FAULTS = {"visa": ["--link-drop-every", "300", "--late-rate", "0.01", "--late-ms", "2500"],
          "mastercard": ["--drop-rate", "0.01"]}


def run_demo(duration_s: float, terminals: int = DEMO_TERMINALS, progress: bool = True,
             faults: bool = False, workers: int = 1) -> dict:
    from payswitch.hsm import Hsm

    # each simulator sends a new ZPK (and ZAK on MAC links) mid-run: 0800 key change
    mid = ["--key-change-after", f"{duration_s / 2:.1f}"]
    sim_args = {"visa": ["--latency-ms", "3", *mid], "mastercard": ["--latency-ms", "5", *mid]}
    if faults:
        sim_args = {k: v + FAULTS[k] for k, v in sim_args.items()}
    from payswitch.lab import realparts

    with tempfile.TemporaryDirectory(prefix="payswitch-demo-") as log_dir:
        # Tokens before anything loads the PKCS#11 library in this process.
        # the switch's token also gets the Visa issuer's PVK/CVK/MK-AC (key ceremony,
        # by label): its stand-in checks the card as that issuer would
        tokens = devkeys.make_dev_tokens(os.path.join(log_dir, "softhsm"),
                                         standin=riskdemo.STANDIN_NETWORKS)
        model = riskdemo.ensure_model(payswitch_argv)  # built once into the cache
        with realparts.mosquitto_broker() as mqtt, \
                running_topology(log_dir, terminals=max(terminals, TERMINALS),
                                 sim_args=sim_args, metrics=True, hsm=tokens,
                                 ledger=True, mqtt=mqtt, workers=workers,
                                 risk=riskdemo.config_lines(model)) as topo, \
                Hsm(tokens["terminal"]) as terminal_hsm, \
                Hsm(tokens["switch"]) as switch_hsm:
            # `ledger verify` checks the event chain with the switch's HSM key (EVK)
            def mac(data: bytes) -> bytes:
                return switch_hsm.event_mac(devkeys.EVK, data)
            report = _traffic(topo, terminals, duration_s, progress, terminal_hsm, mac)
            from payswitch.lab.clearingday import demo_day  # files, settlement, recon, payouts
            report["clearing_day"] = demo_day(topo.dsn, mac, switch_hsm, log_dir)
            return report


def _traffic(topo: Topology, terminals: int, duration_s: float, progress: bool,
             terminal_hsm: object, ledger_mac: object) -> dict:
    """The load, then the per-link figures once reversals have settled."""
    from payswitch.simulators.fraudfeed import build_feed, send_feed
    from payswitch.simulators.load import LoadConfig, run_load

    cfg = LoadConfig(topo.host, topo.port, profile="mixed", terminals=terminals,
                     duration_s=duration_s, cards="mixed", timeout_s=10.0,
                     progress=progress, hsm=terminal_hsm, dukpt_every=DUKPT_EVERY,
                     keep_samples=True)  # report["samples"]: for --report, popped in _demo
    feed = build_feed(seed=7)  # labelled fraud; the labels stay in this process

    feed_codes: dict[str, str] = {}  # the DE39 each feed request got
    # Paced over 90 % of the window: the feed is the same share of the switch's load
    # whatever the terminals do (closed loop, it took what the terminals left and could
    # run past the window) and its last answers come back inside the window.
    feed_rate = len(feed) / (duration_s * FEED_SHARE_OF_WINDOW)
    feed_done: list[float] = []

    async def load_and_feed() -> dict:
        async def feed_task() -> None:
            start = trio.current_time()
            feed_codes.update(await send_feed(topo.host, topo.port, feed, rate=feed_rate,
                                              workers=FEED_LINKS))
            feed_done.append(trio.current_time() - start)
        async with trio.open_nursery() as n:
            n.start_soon(feed_task)
            return await run_load(cfg)
    report = trio.run(load_and_feed)
    report["feed_sent"] = len(feed_codes)
    report["feed_rate"] = round(feed_rate, 1)
    report["feed_elapsed_s"] = round(feed_done[0], 3) if feed_done else None
    report["switch_authorizations"] = report["sent"] + len(feed_codes)
    report["switch_tps"] = round(report["switch_authorizations"] / report["elapsed_s"], 1)
    # A reversal lost to a link drop is retried with backoff (1 s, 2 s, 4 s...).
    switch_links = _settle_saf(topo, wait_s=15.0)
    _settle_outbox(topo.dsn, wait_s=15.0)  # the relay publishes the last events
    # Stop the switch first (drains, signs off), then the simulators report.
    switch_rc = topo.switch.stop()
    links = {}
    for network, proc in topo.simulators.items():
        proc.stop()
        stats = _sim_stats(proc)
        links[network] = {
            "switch": switch_links.get(network, {}),
            "simulator_connections": stats.get("connections", 0),
            "simulator_received_by_mti": stats.get("by_mti", {}),
            "simulator_answered_by_code": stats.get("by_code", {}),
            "simulator_mac_failures": stats.get("mac_failures", 0),
            "key_changes": stats.get("key_changes", []),
            "pin_checks": stats.get("pin_checks", {}),
            "arqc_by_cvn": stats.get("arqc_by_cvn", {}),
            "terminal_by_code": report["by_network"].get(network, {}),
        }
    from payswitch.lab import bank_demo  # bank payments: instant, ACH, camt.053
    report["bank"] = bank_demo.run(topo.dsn, ledger_mac)
    # The day's end: clearing posts every approved hold, then `ledger verify`.
    report.update(settle_ledger(topo.dsn, ledger_mac))
    report["links"] = links
    report["switch_exit_code"] = switch_rc
    report.update(riskdemo.figures(topo.dsn, feed, topo.switch.stderr_text(), feed_codes))
    return report


def _outbox_unsent(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("select count(*) from outbox where sent_at is null").fetchone()[0]


def _settle_outbox(dsn: str, wait_s: float) -> None:
    """Until the switch's relay has published every event, or ``wait_s`` has passed."""
    deadline = time.monotonic() + wait_s
    while _outbox_unsent(dsn) and time.monotonic() < deadline:
        time.sleep(0.2)


def settle_ledger(dsn: str, mac) -> dict:
    """Clearing (switch.ledgerwire.clear: every pending hold up to now is posted), then
    ledger.verify with the switch's event MAC (a callable, or a hex key). Run after the
    switch stopped."""
    import psycopg

    import payswitch.ledger as L
    from payswitch.switch.ledgerwire import AUTH_FX, AUTH_OFFUS, AUTH_ONUS, clear

    if isinstance(mac, str):
        mac = L.hmac_sha256(bytes.fromhex(mac))
    posted = clear(dsn, mac)
    with psycopg.connect(dsn) as conn:
        rep = L.verify(conn, mac)
        # holds of card authorizations (the bank phase's instant payments are pending
        # transfers too, posted or voided by their own answers, not by clearing)
        transfers, holds, onus = conn.execute(
            "select count(*), count(*) filter (where flags & 2 = 2 and code = any(%s)),"
            " count(*) filter (where flags & 2 = 2 and code = %s) from transfers",
            ([AUTH_ONUS, AUTH_OFFUS, AUTH_FX], AUTH_ONUS)).fetchone()
        events, unsent = conn.execute(
            "select (select count(*) from events),"
            " (select count(*) from outbox where sent_at is null)").fetchone()
        # acknowledged by the broker (PUBACK, QoS 1) and marked sent by the relay
        (published,) = conn.execute(
            "select count(*) from outbox where sent_at is not null").fetchone()
        by_state = dict(conn.execute(
            "select state, count(*) from pending_transfers group by state").fetchall())
    return {"ledger_balanced": rep.ledger_balanced, "ledger_verify_ok": rep.ok,
            "ledger": {"holds": int(holds), "onus_holds": int(onus),
                       "holds_by_state": {k: int(v) for k, v in sorted(by_state.items())},
                       "posted_at_clearing": posted, "transfers": int(transfers),
                       "events": int(events), "outbox_unsent": int(unsent),
                       "events_published": int(published),
                       "verify_text": rep.to_text()}}


def key_changes_ok(report: dict) -> bool:
    """Every link's key changes were accepted and no right PIN failed to verify."""
    return all(d.get("key_changes") and all(c["code"] == "00" for c in d["key_changes"])
               and not d.get("pin_checks", {}).get("failed")
               for d in report["links"].values())


def format_demo(report: dict) -> str:
    from payswitch.simulators.load import format_report

    lines = [format_report(report, title="demo")]
    if "switch_authorizations" in report:
        lines.append(f"  switch: {report['switch_authorizations']} authorizations "
                     f"({report['sent']} from the terminals, {report['feed_sent']} from the "
                     f"fraud feed), {report['switch_tps']}/s over the "
                     f"{report['elapsed_s']} s"
                     + (f"; the feed paced at {report['feed_rate']}/s, done in "
                        f"{report['feed_elapsed_s']} s" if report.get("feed_rate") else ""))
    for network, d in report["links"].items():
        sw = d["switch"]
        if sw:
            lines.append(f"  link {network}: sent {sw['requests']}, answers "
                         f"{sw['responses_by_code']}, timeouts {sw['timeouts']}, late "
                         f"{sw['late']}; reversals acknowledged {sw['saf_acknowledged']}, "
                         f"pending {sw['saf_pending']}")
        lines.append(f"    {network} simulator: connections "
                     f"{d['simulator_connections']}, received {d['simulator_received_by_mti']}")
        changes = ", ".join(f"{c['key_type']} KCV {c['kcv']} -> {c['code']}"
                            for c in d.get("key_changes", []))
        lines.append(f"    key changes: {changes or 'none'}; issuer PIN checks "
                     f"{d.get('pin_checks', {})}; ARQCs by CVN {d.get('arqc_by_cvn', {})}")
    lines.append(f"  switch exit code after SIGTERM: {report['switch_exit_code']}")
    if report.get("bank"):
        from payswitch.lab import bank_demo
        lines += bank_demo.format_lines(report["bank"])
    if "risk" in report:
        lines += riskdemo.format_lines(report)
    led = report.get("ledger")
    if led:
        lines.append(f"  ledger: {led['holds']} holds ({led['onus_holds']} on-us, authorized "
                     f"by the switch) {led['holds_by_state']}, "
                     f"{led['posted_at_clearing']} posted at clearing, {led['transfers']} "
                     f"transfers, {led['events']} events, "
                     f"{led.get('events_published', 0)} published to MQTT "
                     f"({led['outbox_unsent']} not yet: written after the switch and its"
                     " relay stopped, by the bank and clearing runs)")
        lines.append(f"  ledger verify: {'clean' if report['ledger_verify_ok'] else 'FAILED'}"
                     f", balanced {report['ledger_balanced']}")
        lines += ["    " + x for x in led["verify_text"].splitlines()]
    if "clearing_day" in report:
        from payswitch.lab.clearingday import format_lines
        lines += format_lines(report["clearing_day"])
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="switch + Visa/Mastercard simulators + terminals, "
                                    "mixed traffic, then a report")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of traffic")
    p.add_argument("--terminals", type=int, default=DEMO_TERMINALS,
                   help="concurrent closed-loop terminals")
    p.add_argument("--workers", type=int, default=1, help="switch worker processes")
    p.add_argument("--faults", action="store_true",
                   help="issuer link drops, late and lost answers (expect more 91s)")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.add_argument("--report", metavar="DIR", help="also write an HTML report with plots there")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    try:
        report = run_demo(args.duration, args.terminals, progress=not args.json,
                          faults=args.faults, workers=args.workers)
    except DemoError as e:
        if args.json:
            print(json.dumps({"sent": 0, "approved": 0, "declined": 0, "timeouts": 0,
                              "errors": 1, "p50_ms": 0.0, "p99_ms": 0.0,
                              "failure": str(e)}))
        else:
            print(f"demo failed: {e}", file=sys.stderr)
        return 1
    samples = report.pop("samples", [])
    print(json.dumps(report) if args.json else format_demo(report))
    if args.report:  # switch/report.py (ops): one self-contained HTML file
        from payswitch.switch.report import write_report
        print(f"report: {write_report(report, samples, args.report)}",
              file=sys.stderr if args.json else sys.stdout)
    ok = (report["approved"] > 0 and report["errors"] == 0
          and report.get("ledger_verify_ok", False) and report.get("ledger_balanced", False)
          and report.get("bank", {}).get("ok", True) and key_changes_ok(report))
    return 0 if ok else 1
