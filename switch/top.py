"""`payswitch top`: a live console over one or more switch metrics endpoints.

Each interval it scrapes every ``--url`` (one per worker), adds the workers up and
draws, with rich: throughput, approval rate, p50/p99 of the interval (from the
histogram buckets, interpolated as PromQL's ``histogram_quantile``), links (state,
breaker, in flight, requests/s, timeouts, SAF backlog), ledger / outbox / HSM queues
and the top response codes. Rates and percentiles are over the last interval; an
endpoint that does not answer is shown as down and left out of the sums.
"""

from __future__ import annotations

import argparse
import math
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

AUTH_MTIS = frozenset({"0100", "0101", "0200", "0201"})
APPROVED = frozenset({"00", "08", "10", "11"})
STATE_NAMES = {0: "down", 1: "connecting", 2: "signed_on"}
SCRAPE_TIMEOUT_S = 2.0
MAX_BODY_BYTES = 8 * 1024 * 1024  # a metrics page is a few kB; refuse a runaway one
TOP_CODES = 8

# {metric sample name: {sorted label tuple: value}}
Samples = dict[str, dict[tuple, float]]


def scrape(url: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (operator's URL)
        body = resp.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"{url}: metrics page over {MAX_BODY_BYTES} bytes")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def scrape_all(urls: list[str]) -> list[Samples | None]:
    out: list[Samples | None] = []
    for url in urls:
        try:
            out.append(scrape(url))
        except (OSError, ValueError, urllib.error.URLError):
            out.append(None)
    return out


def total(snaps: Sequence[Samples | None], name: str, **match) -> float:
    """Sum of ``name`` over every endpoint and every label set matching ``match``
    (a value may be a set of allowed values)."""
    return sum(v for snap in snaps if snap for labels, v in snap.get(name, {}).items()
               if _matches(dict(labels), match))


def _matches(labels: dict, match: dict) -> bool:
    for k, want in match.items():
        got = labels.get(k)
        if (got not in want) if isinstance(want, frozenset | set) else got != want:
            return False
    return True


def by_label(snaps: Sequence[Samples | None], name: str, label: str, **match) -> dict[str, float]:
    out: dict[str, float] = {}
    for snap in snaps:
        for labels, v in (snap or {}).get(name, {}).items():
            d = dict(labels)
            if label in d and _matches(d, match):
                out[d[label]] = out.get(d[label], 0.0) + v
    return out


def quantile(q: float, buckets: dict[str, float]) -> float | None:
    """PromQL's histogram_quantile over cumulative bucket counts {le: count}."""
    pairs = sorted((float(le), n) for le, n in buckets.items())
    if not pairs or pairs[-1][1] <= 0:
        return None
    rank = q * pairs[-1][1]
    lower, below = 0.0, 0.0
    for le, n in pairs:
        if n >= rank:
            if math.isinf(le):
                return lower  # the highest finite bound, as Prometheus does
            # the same operation order as Prometheus, so the same float
            return lower + (le - lower) * ((rank - below) / (n - below)) if n > below else le
        lower, below = le, n
    return lower


@dataclass
class LinkRow:
    name: str
    state: str = "?"
    breaker: bool = False
    in_flight: float = 0
    req_per_s: float = 0.0
    timeouts: float = 0  # in the interval
    timeouts_total: float = 0
    saf_pending: float = 0
    saf_oldest_s: float = 0.0


@dataclass
class View:
    endpoints_up: int
    endpoints: int
    auth_per_s: float
    approval: float | None
    p50_s: float | None
    p99_s: float | None
    in_flight: float
    links: list[LinkRow] = field(default_factory=list)
    codes: list[tuple[str, float, float]] = field(default_factory=list)  # code, /s, total
    saf_pending: float = 0
    outbox_unsent: float | None = None
    outbox_oldest_s: float | None = None
    ledger_queue: float | None = None
    hsm_pending: float | None = None
    hsm_errors: float = 0
    up: list[bool] = field(default_factory=list)  # per URL: answered this scrape


def compute(prev: list[Samples | None], cur: list[Samples | None], dt_s: float) -> View:
    """The view over one interval. Counters are differenced per endpoint (an endpoint
    missing from either scrape, or restarted, adds nothing to the rates)."""
    pairs = [(p, c) for p, c in zip(prev, cur, strict=True) if p and c]
    delta = [_delta(p, c) for p, c in pairs]
    dt_s = max(dt_s, 1e-6)
    auth = {"mti": AUTH_MTIS}
    answered = total(delta, "payment_responses_total", **auth)
    approved = total(delta, "payment_responses_total", response_code=APPROVED, **auth)
    buckets = by_label(delta, "payment_processing_duration_seconds_bucket", "le", **auth)
    up = [c for c in cur if c]
    view = View(
        endpoints_up=len(up), endpoints=len(cur),
        auth_per_s=total(delta, "payment_attempts_total", **auth) / dt_s,
        approval=approved / answered if answered else None,
        p50_s=quantile(0.5, buckets), p99_s=quantile(0.99, buckets),
        in_flight=total(up, "payment_in_flight"),
        saf_pending=total(up, "saf_pending"),
        hsm_errors=total(delta, "hsm_errors_total"),
        up=[c is not None for c in cur],
    )
    view.links = _links(up, delta, dt_s)
    rates = by_label(delta, "payment_responses_total", "response_code")
    totals = by_label(up, "payment_responses_total", "response_code")
    ranked = sorted(totals, key=lambda c: (-rates.get(c, 0), -totals[c], c))[:TOP_CODES]
    view.codes = [(c, rates.get(c, 0) / dt_s, totals[c]) for c in ranked]
    if any("ledger_outbox_unsent" in s for s in up):
        view.outbox_unsent = total(up, "ledger_outbox_unsent")
        view.outbox_oldest_s = max(v for s in up
                                   for v in s.get("ledger_outbox_oldest_age_seconds",
                                                  {}).values())
    if any("ledger_writer_queue_depth" in s for s in up):
        view.ledger_queue = total(up, "ledger_writer_queue_depth")
    if any("hsm_max_pending" in s and s["hsm_max_pending"].get((), 0) for s in up):
        view.hsm_pending = total(up, "hsm_pending")
    return view


def _delta(prev: Samples, cur: Samples) -> Samples:
    """cur - prev for every sample; a value that went down (a restart) counts from 0."""
    out: Samples = {}
    for name, series in cur.items():
        before = prev.get(name, {})
        out[name] = {k: (v - before[k] if k in before and v >= before[k] else v)
                     for k, v in series.items()}
    return out


def _links(up: list[Samples], delta: list[Samples], dt_s: float) -> list[LinkRow]:
    names = sorted({dict(k)["link"] for s in up for k in s.get("link_state", {})})
    rows = []
    for name in names:
        states = [v for s in up for k, v in s.get("link_state", {}).items()
                  if dict(k).get("link") == name]
        ages = [v for s in up for k, v in s.get("saf_oldest_age_seconds", {}).items()
                if dict(k).get("link") == name]
        rows.append(LinkRow(
            name=name,
            state=STATE_NAMES.get(int(min(states)), "?"),  # the worst worker's
            breaker=total(up, "link_breaker_open", link=name) > 0,
            in_flight=total(up, "link_in_flight", link=name),
            req_per_s=total(delta, "link_requests_total", link=name) / dt_s,
            timeouts=total(delta, "link_timeouts_total", link=name),
            timeouts_total=total(up, "link_timeouts_total", link=name),
            saf_pending=total(up, "saf_pending", link=name),
            saf_oldest_s=max(ages, default=0.0),
        ))
    return rows


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _opt(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def render(view: View, urls: list[str]) -> Group:
    head = Table(title="payswitch top", show_header=True, expand=False)
    for col in ("endpoints", "auth/s", "approval", "p50", "p99", "in flight"):
        head.add_column(col, justify="right")
    approval = None if view.approval is None else view.approval * 100
    head.add_row(f"{view.endpoints_up}/{view.endpoints} up", f"{view.auth_per_s:.1f}",
                 _opt(approval, "{:.1f}%"),
                 _ms(view.p50_s), _ms(view.p99_s), f"{view.in_flight:.0f}")

    links = Table(title="links", show_header=True)
    for col in ("link", "state", "breaker", "in flight", "req/s", "timeouts",
                "SAF pending", "SAF oldest"):
        text = col in ("link", "state")
        links.add_column(col, justify="left" if text else "right", no_wrap=text)
    for r in view.links:
        state = r.state if r.state == "signed_on" else f"[bold red]{r.state}[/]"
        links.add_row(r.name, state, "[bold red]open[/]" if r.breaker else "closed",
                      f"{r.in_flight:.0f}", f"{r.req_per_s:.1f}",
                      f"{r.timeouts:.0f} ({r.timeouts_total:.0f})", f"{r.saf_pending:.0f}",
                      f"{r.saf_oldest_s:.0f} s")

    queues = Table(title="backlogs", show_header=True)
    for col in ("SAF pending", "outbox unsent", "outbox oldest", "ledger queue",
                "HSM pending", "HSM errors"):
        queues.add_column(col, justify="right")
    queues.add_row(f"{view.saf_pending:.0f}", _opt(view.outbox_unsent),
                   _opt(view.outbox_oldest_s, "{:.0f} s"), _opt(view.ledger_queue),
                   _opt(view.hsm_pending), f"{view.hsm_errors:.0f}")

    codes = Table(title="response codes", show_header=True)
    for col in ("DE39", "/s", "total"):
        codes.add_column(col, justify="right")
    for code, rate, n in view.codes:
        codes.add_row(code, f"{rate:.1f}", f"{n:.0f}")
    down = [u for u, ok in zip(urls, view.up, strict=True) if not ok]
    parts: list[Any] = [head, links, queues, codes]
    if down:
        parts.append(f"[bold red]down:[/] {' '.join(down)}")
    return Group(*parts)


def frame(prev: list[Samples | None], cur: list[Samples | None], dt_s: float,
          urls: list[str]) -> Group:
    return render(compute(prev, cur, dt_s), urls)


def run(urls: list[str], interval_s: float, once: bool, console: Console | None = None,
        iterations: int | None = None) -> int:
    console = console or Console()
    prev, t_prev = scrape_all(urls), time.monotonic()
    if once:
        time.sleep(interval_s)
        cur = scrape_all(urls)
        console.print(frame(prev, cur, time.monotonic() - t_prev, urls))
        return 0 if any(cur) else 1
    with Live(console=console, auto_refresh=False, screen=False) as live:
        n = 0
        while iterations is None or n < iterations:
            time.sleep(interval_s)
            cur, t_cur = scrape_all(urls), time.monotonic()
            live.update(frame(prev, cur, t_cur - t_prev, urls), refresh=True)
            prev, t_prev, n = cur, t_cur, n + 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("top", help="live console over switch metrics endpoints")
    p.add_argument("--url", action="append", required=True,
                   help="a metrics endpoint, e.g. http://127.0.0.1:9464/metrics "
                        "(repeat for each worker)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(func=_top)


def _top(args) -> int:
    if not 0.1 <= args.interval <= 3600:
        print("payswitch top: --interval between 0.1 and 3600 s")
        return 2
    try:
        return run(args.url, args.interval, args.once)
    except KeyboardInterrupt:
        return 0
