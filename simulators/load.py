"""Terminal load generator: N terminals against one host, closed loop or fixed rate.

Closed loop: each terminal sends its next request as soon as the previous answer
arrives (N requests in flight at most). Fixed rate: requests leave at ``rate`` per
second, spread round-robin over the terminals, each terminal link carrying several
in flight (bounded by ``max_in_flight``; a request that would exceed it is counted
as ``overrun`` and not sent).

The report counts responses by DE39 and gives latency percentiles. Its stable keys:
``sent``, ``approved``, ``declined``, ``timeouts`` (DE39 91/68 from the host),
``errors`` (transport failures, no response, format errors 30 and malfunctions 96:
something is broken, not a cardholder's decline), ``p50_ms``, ``p99_ms``; and
``pin_declines`` (DE39 55, wrong PIN), ``pin_tries_exceeded`` (75),
``card_check_declines`` (82 CVV/iCVV/ARQC, N7 CVV2), ``pin_crypto_errors`` (81).

With ``LoadConfig.hsm`` (an ``Hsm`` on the terminal token) the terminals build real
PIN blocks, CVVs and ARQCs (``terminal.CardCrypto``); every ``dukpt_every``-th
terminal uses TDES DUKPT instead of the TPK (the switch must be configured to match:
``lab.demo.demo_config`` does it for the same numbering).
"""

from __future__ import annotations

import collections
import contextlib
import math
import random
import sys
from dataclasses import dataclass, field

import trio

from payswitch.hsm import Hsm
from payswitch.simulators.cards import BY_NAME, Card
from payswitch.simulators.terminal import (
    CardCrypto,
    Result,
    Terminal,
    TerminalLink,
    TransportError,
    open_link,
    percentile,
)

PROFILES = ("pos", "atm", "mixed")
APPROVED = {"00", "10", "11", "08"}
TIMEOUT_CODES = {"91", "68"}
ERROR_CODES = {"30", "96"}
# Card mixes: card name -> weight.
CARD_MIXES: dict[str, dict[str, float]] = {
    "approve": {"visa_approve": 1, "visa_approve_2": 1, "mastercard_approve": 1,
                "mastercard_approve_2": 1, "mastercard_2series_approve": 1},
    "mixed": {
        "visa_approve": 20, "visa_approve_2": 20, "mastercard_approve": 20,
        "mastercard_approve_2": 15, "mastercard_2series_approve": 5,
        "visa_decline": 2, "mastercard_decline": 2, "visa_insufficient_funds": 2,
        "mastercard_insufficient_funds": 2, "visa_expired": 1, "mastercard_expired": 1,
        "visa_invalid_card": 1, "mastercard_invalid_card": 1,
        "visa_no_answer": 0.5, "mastercard_no_answer": 0.5,
        "visa_wrong_pin": 1.5, "mastercard_wrong_pin": 1.5,
        "visa_bad_cvv": 0.5, "mastercard_bad_cvv": 0.5,
        "visa_bad_arqc": 0.5, "mastercard_bad_arqc": 0.5,
    },
}


@dataclass
class LoadConfig:
    host: str
    port: int
    profile: str = "mixed"
    terminals: int = 4
    rate: float | None = None  # None = closed loop
    duration_s: float = 10.0
    framing: str = "len2"
    cards: str = "mixed"
    timeout_s: float = 30.0
    max_in_flight: int = 1024
    terminal_prefix: str = "DEMO"
    first_terminal: int = 1
    seed: int | None = None
    progress: bool = True
    hsm: Hsm | None = None  # the terminal token: real PIN blocks, CVVs, ARQCs
    dukpt_every: int = 0  # terminal numbers divisible by it use DUKPT; 0 = none
    mac_key: str = ""  # TAK label in the terminal token: every request MACed (DE64)
    # report["samples"]: one (t_s since start, latency_s, DE39 or "error", network) per
    # request, for plots (switch/report.py); off by default: a long run makes many
    keep_samples: bool = False


@dataclass
class Report:
    by_code: collections.Counter = field(default_factory=collections.Counter)
    errors_by_kind: collections.Counter = field(default_factory=collections.Counter)
    latencies_s: list[float] = field(default_factory=list)
    by_network: dict[str, collections.Counter] = field(default_factory=dict)
    sent: int = 0
    overrun: int = 0
    elapsed_s: float = 0.0  # until the last answer (or timeout)
    window_s: float = 0.0  # the sending window: the configured duration
    keep_samples: bool = False
    samples: list[tuple[float, float, str, str]] = field(default_factory=list)

    def add(self, card: Card, result: Result) -> None:
        net = card.network or "unrouted"
        if self.keep_samples:
            code = (result.response.response_code or "??") if result.response else "error"
            self.samples.append((trio.current_time(), result.latency_s, code, net))
        counter = self.by_network.setdefault(net, collections.Counter())
        if result.response is None:
            kind = result.error or "no response"
            self.errors_by_kind[kind] += 1
            counter["error"] += 1
            return
        code = result.response.response_code or "??"
        self.by_code[code] += 1
        counter[code] += 1
        self.latencies_s.append(result.latency_s)

    def as_dict(self) -> dict:
        lat = sorted(self.latencies_s)
        window = min(self.elapsed_s, self.window_s) if self.window_s else self.elapsed_s
        approved = sum(n for c, n in self.by_code.items() if c in APPROVED)
        timeouts = sum(n for c, n in self.by_code.items() if c in TIMEOUT_CODES)
        code_errors = sum(n for c, n in self.by_code.items() if c in ERROR_CODES)
        answered = sum(self.by_code.values())
        return {
            "sent": self.sent,
            "approved": approved,
            "declined": answered - approved - timeouts - code_errors,
            "timeouts": timeouts,
            "errors": code_errors + sum(self.errors_by_kind.values()),
            "pin_declines": self.by_code.get("55", 0),
            "pin_tries_exceeded": self.by_code.get("75", 0),
            "card_check_declines": self.by_code.get("82", 0) + self.by_code.get("N7", 0),
            "pin_crypto_errors": self.by_code.get("81", 0),
            "p50_ms": round(percentile(lat, 50) * 1000, 3),
            "p99_ms": round(percentile(lat, 99) * 1000, 3),
            "max_ms": round((lat[-1] if lat else 0) * 1000, 3),
            # Over the sending window: a fixed-rate run is not diluted by the wait for
            # its last answers (up to one timeout after the window closes).
            "tps": round(answered / window, 1) if window else 0.0,
            "elapsed_s": round(self.elapsed_s, 3),
            "overrun": self.overrun,
            "by_code": dict(sorted(self.by_code.items())),
            "errors_by_kind": dict(self.errors_by_kind),
            "by_network": {k: dict(sorted(v.items())) for k, v in sorted(self.by_network.items())},
        }


def format_report(d: dict, title: str = "load") -> str:
    lines = [
        f"{title}: sent={d['sent']} approved={d['approved']} declined={d['declined']} "
        f"timeouts={d['timeouts']} errors={d['errors']} in {d['elapsed_s']} s "
        f"({d['tps']}/s)",
        f"  wrong PIN (55)={d.get('pin_declines', 0)} PIN tries exceeded (75)="
        f"{d.get('pin_tries_exceeded', 0)} CVV/ARQC (82, N7)={d.get('card_check_declines', 0)}"
        f" PIN crypto (81)={d.get('pin_crypto_errors', 0)}",
        f"  latency p50={d['p50_ms']} ms p99={d['p99_ms']} ms max={d['max_ms']} ms",
        "  by response code: " + (", ".join(f"{c}={n}" for c, n in d["by_code"].items())
                                  or "none"),
    ]
    for net, counts in d["by_network"].items():
        lines.append(f"  {net}: " + ", ".join(f"{c}={n}" for c, n in counts.items()))
    if d["errors_by_kind"]:
        lines.append("  errors: " + ", ".join(f"{k}={n}" for k, n in d["errors_by_kind"].items()))
    if d["overrun"]:
        lines.append(f"  overrun (not sent, in-flight limit): {d['overrun']}")
    return "\n".join(lines)


class _Generator:
    def __init__(self, cfg: LoadConfig) -> None:
        if cfg.profile not in PROFILES:
            raise ValueError(f"unknown profile {cfg.profile!r}")
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        mix = CARD_MIXES[cfg.cards]
        self.cards = [BY_NAME[n] for n in mix]
        self.weights = list(mix.values())
        self.report = Report(keep_samples=cfg.keep_samples)

    def next_request(self, term: Terminal):
        card = self.rng.choices(self.cards, self.weights)[0]
        profile = self.cfg.profile
        if profile == "mixed":
            profile = "pos" if self.rng.random() < 0.7 else "atm"
        if profile == "pos":
            amount = self.rng.randrange(100, 20_000)
            return card, term.purchase(card, amount, chip=self.rng.random() < 0.8)
        if self.rng.random() < 0.15:
            return card, term.balance_inquiry(card)
        amount = self.rng.choice((2000, 4000, 6000, 10_000, 20_000))
        return card, term.withdrawal(card, amount, chip=self.rng.random() < 0.5)

    async def one(self, link: TerminalLink, term: Terminal) -> None:
        card, msg = self.next_request(term)
        self.report.sent += 1
        result = await link.request(msg, self.cfg.timeout_s)
        self.report.add(card, result)

    async def closed_loop_terminal(self, idx: int, deadline: float) -> None:
        term = self._terminal(idx)
        while trio.current_time() < deadline:
            try:
                async with open_link(self.cfg.host, self.cfg.port, mac=self.mac(),
                                     framing=self.cfg.framing) as link:
                    while trio.current_time() < deadline and not link.closed:
                        await self.one(link, term)
            except TransportError as e:
                self.report.errors_by_kind[str(e).split(":")[0]] += 1
                await trio.sleep(0.1)  # bounded: the loop ends at the deadline

    async def fixed_rate(self, deadline: float) -> None:
        cfg = self.cfg
        terms = [self._terminal(i) for i in range(cfg.terminals)]
        limiter = trio.CapacityLimiter(cfg.max_in_flight)
        async with contextlib.AsyncExitStack() as stack:
            links = []
            try:
                for _ in terms:
                    links.append(await stack.enter_async_context(
                        open_link(cfg.host, cfg.port, framing=cfg.framing,
                                  mac=self.mac())))
            except TransportError as e:
                self.report.errors_by_kind[str(e).split(":")[0]] += 1
                return
            async with trio.open_nursery() as nursery:
                start = trio.current_time()
                i = 0
                while True:
                    at = start + i / cfg.rate
                    if at >= deadline:
                        break
                    await trio.sleep_until(at)
                    k = i % len(terms)
                    i += 1
                    try:
                        limiter.acquire_on_behalf_of_nowait(i)
                    except trio.WouldBlock:
                        self.report.overrun += 1
                        continue
                    nursery.start_soon(self._limited, links[k], terms[k], limiter, i)

    async def _limited(self, link, term, limiter, token) -> None:
        try:
            await self.one(link, term)
        finally:
            limiter.release_on_behalf_of(token)

    def mac(self):
        """The request MAC (retail MAC / AES-CMAC under the TAK ``mac_key``), or None."""
        if not self.cfg.mac_key:
            return None
        if self.cfg.hsm is None:
            raise ValueError("mac_key needs the terminal token (hsm)")
        hsm, label = self.cfg.hsm, self.cfg.mac_key
        return lambda body: hsm.generate_mac(label, body)

    def _terminal(self, idx: int) -> Terminal:
        n = self.cfg.first_terminal + idx
        width = 8 - len(self.cfg.terminal_prefix)
        crypto = None
        if self.cfg.hsm is not None:
            dukpt = bool(self.cfg.dukpt_every) and n % self.cfg.dukpt_every == 0
            crypto = CardCrypto(self.cfg.hsm, dukpt=dukpt, device_id=n)
        return Terminal(f"{self.cfg.terminal_prefix}{n:0{width}d}",
                        seed=self.rng.randrange(2**32), crypto=crypto)

    async def progress(self, start: float, deadline: float) -> None:
        if not self.cfg.progress or deadline - start < 3:
            return
        width = 30
        while True:
            await trio.sleep(1)
            now = trio.current_time()
            frac = min(1.0, (now - start) / (deadline - start))
            done = math.floor(frac * width)
            r = self.report
            sys.stderr.write(
                f"\r[{'#' * done}{'.' * (width - done)}] {now - start:5.1f}s "
                f"sent={r.sent} answered={sum(r.by_code.values())} "
                f"errors={sum(r.errors_by_kind.values())}  ")
            sys.stderr.flush()
            if frac >= 1:
                return


async def run_load(cfg: LoadConfig) -> dict:
    """Run the load; returns the report as a dict (see the module docstring)."""
    gen = _Generator(cfg)
    start = trio.current_time()
    deadline = start + cfg.duration_s
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gen.progress, start, deadline)
        async with trio.open_nursery() as work:
            if cfg.rate:
                work.start_soon(gen.fixed_rate, deadline)
            else:
                for i in range(cfg.terminals):
                    work.start_soon(gen.closed_loop_terminal, i, deadline)
        gen.report.elapsed_s = trio.current_time() - start
        gen.report.window_s = cfg.duration_s
        nursery.cancel_scope.cancel()
    if cfg.progress and cfg.duration_s >= 3:
        sys.stderr.write("\n")
    out = gen.report.as_dict()
    if cfg.keep_samples:  # answer time -> seconds since start
        out["samples"] = [(round(t - start, 6), lat, code, net)
                          for t, lat, code, net in gen.report.samples]
    return out
