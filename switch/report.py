"""The demo report as one self-contained HTML file: `payswitch demo --report DIR`.

``write_report(report, samples, out_dir)`` takes the demo's report dict and the load
generator's per-request samples ``(t_s, latency_s, response_code, network)`` and writes
``demo-report.html``: the headline figures, a latency histogram, the latency
percentile curve, throughput and approval rate per second, response codes by network,
per-link figures and the ledger summary. Plots are inline SVG written here (no plotting
library, no script, no external file: it opens offline in any browser).
"""

from __future__ import annotations

import bisect
import html
import math
from collections import Counter
from pathlib import Path

APPROVED = frozenset({"00", "08", "10", "11"})
FILENAME = "demo-report.html"
W, H = 760, 300  # plot size, px
M_LEFT, M_RIGHT, M_TOP, M_BOTTOM = 64, 20, 16, 44
PALETTE = ("#2b8a3e", "#1c7ed6", "#e8590c", "#c2255c", "#7048e8", "#0b7285", "#f08c00",
           "#5c940d", "#862e9c", "#495057", "#d9480f", "#364fc7")
CODE_NAMES = {"00": "approved", "05": "do not honour", "12": "invalid transaction",
              "13": "invalid amount", "14": "invalid card", "15": "no such issuer",
              "30": "format error", "51": "insufficient funds", "54": "expired",
              "55": "wrong PIN", "58": "not permitted", "75": "PIN tries exceeded",
              "81": "PIN crypto error", "82": "bad CVV/ARQC", "91": "issuer unavailable",
              "94": "duplicate", "96": "system malfunction", "N7": "bad CVV2",
              "error": "no answer"}

Sample = tuple[float, float, str, str]


def write_report(report: dict, samples: list[Sample], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILENAME
    path.write_text(render_html(report, samples), encoding="utf-8")
    return path


def render_html(report: dict, samples: list[Sample]) -> str:
    answered = [s for s in samples if s[2] != "error"]
    lat_ms = sorted(s[1] * 1000 for s in answered)
    sections = [
        _section("Summary", _summary(report)),
        _section("Latency histogram", latency_histogram(lat_ms),
                 "answered requests, log-spaced bins; the dashed lines are p50 and p99"),
        _section("Latency percentiles", percentile_curve(lat_ms),
                 "latency at each percentile (x axis: share of requests at or under it)"),
        _section("Throughput", throughput_chart(samples), "answers per second"),
        _section("Approval rate", approval_chart(samples),
                 "share of answers approved (00, 08, 10, 11), per second"),
        _section("Response codes by network", codes_by_network(samples)),
        _section("Links", _links(report)),
        _section("Ledger", _ledger(report)),
        _section("Risk scores", risk_scores(report.get("risk") or {}),
                 "the fraud feed's scored authorizations by the generator's labels, share "
                 "of each class per score bin (log scale); the dashed line is the decline "
                 "threshold"),
    ]
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>payswitch demo report</title>"
            f"<style>{CSS}</style></head><body><h1>payswitch demo report</h1>"
            + "".join(sections) + "</body></html>\n")


CSS = ("body{font-family:system-ui,sans-serif;margin:24px;color:#212529;max-width:820px}"
       "h2{margin:28px 0 4px;font-size:18px}p.note{margin:0 0 8px;color:#666;font-size:13px}"
       "table{border-collapse:collapse;font-size:14px}td,th{padding:3px 10px;"
       "border-bottom:1px solid #dee2e6;text-align:right}td:first-child,th:first-child"
       "{text-align:left}svg{display:block}svg text{font-size:11px;fill:#495057}"
       ".bad{color:#c92a2a;font-weight:bold}.good{color:#2b8a3e;font-weight:bold}"
       "pre{white-space:pre-wrap;font-size:12px}")


def _section(title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<section><h2>{html.escape(title)}</h2>{note_html}{body}</section>"


def _table(rows: list[tuple], head: tuple | None = None) -> str:
    def cells(row: tuple, tag: str) -> str:
        return "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in row)
    out = "<table>"
    if head:
        out += f"<tr>{cells(head, 'th')}</tr>"
    return out + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows) + "</table>"


def _summary(r: dict) -> str:
    rows = [(k, r.get(k, "-")) for k in ("sent", "approved", "declined", "timeouts",
                                           "errors", "p50_ms", "p99_ms", "max_ms", "tps",
                                           "elapsed_s")]
    ok = r.get("ledger_verify_ok")
    verdict = ("" if ok is None else
               f'<p class="{"good" if ok else "bad"}">ledger verify: '
               f'{"clean" if ok else "FAILED"}, balanced {r.get("ledger_balanced")}</p>')
    return _table(rows) + verdict


def _links(r: dict) -> str:
    rows = []
    for name, d in sorted(r.get("links", {}).items()):
        sw = d.get("switch") or {}
        rows.append((name, sw.get("requests", "-"), sw.get("timeouts", "-"),
                     sw.get("late", "-"), sw.get("saf_acknowledged", "-"),
                     sw.get("saf_pending", "-"), d.get("simulator_connections", "-")))
    if not rows:
        return "<p>no link figures</p>"
    return _table(rows, ("link", "sent", "timeouts", "late", "reversals acked",
                         "reversals pending", "simulator connections"))


def _ledger(r: dict) -> str:
    led = r.get("ledger")
    if not led:
        return "<p>no ledger in this run</p>"
    rows = [("holds", led.get("holds")), ("on-us holds", led.get("onus_holds")),
            *((f"holds {k}", v) for k, v in led.get("holds_by_state", {}).items()),
            ("posted at clearing", led.get("posted_at_clearing")),
            ("transfers", led.get("transfers")), ("events", led.get("events")),
            ("events published to MQTT", led.get("events_published")),
            ("outbox not relayed", led.get("outbox_unsent"))]
    text = html.escape(led.get("verify_text", ""))
    return _table(rows) + (f"<pre>{text}</pre>" if text else "")


# -- plots -------------------------------------------------------------------------------

class Plot:
    """Linear or log y, linear x, in a W x H SVG with axes, ticks and labels."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, *, xlabel: str,
                 ylabel: str, ylog: bool = False, xlog: bool = False) -> None:
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1
        self.xlog, self.ylog = xlog, ylog
        self.xlabel, self.ylabel = xlabel, ylabel
        self.parts: list[str] = []

    def _t(self, v: float, lo: float, hi: float, log: bool) -> float:
        if log:
            v, lo, hi = math.log10(max(v, 1e-9)), math.log10(lo), math.log10(hi)
        return (v - lo) / (hi - lo)

    def x(self, v: float) -> float:
        return M_LEFT + self._t(v, self.x0, self.x1, self.xlog) * (W - M_LEFT - M_RIGHT)

    def y(self, v: float) -> float:
        return H - M_BOTTOM - self._t(v, self.y0, self.y1, self.ylog) * (H - M_TOP - M_BOTTOM)

    def add(self, svg: str) -> None:
        self.parts.append(svg)

    def svg(self, xticks: list[float], yticks: list[float], xfmt=None, yfmt=None,
            legend: list[tuple[str, str]] | None = None) -> str:
        xfmt, yfmt = xfmt or _num, yfmt or _num
        axes = [f'<line x1="{M_LEFT}" y1="{H - M_BOTTOM}" x2="{W - M_RIGHT}" '
                f'y2="{H - M_BOTTOM}" stroke="#868e96"/>',
                f'<line x1="{M_LEFT}" y1="{M_TOP}" x2="{M_LEFT}" y2="{H - M_BOTTOM}" '
                'stroke="#868e96"/>']
        for t in xticks:
            axes.append(f'<text x="{self.x(t):.1f}" y="{H - M_BOTTOM + 16}" '
                        f'text-anchor="middle">{xfmt(t)}</text>')
        for t in yticks:
            y = self.y(t)
            axes.append(f'<line x1="{M_LEFT}" y1="{y:.1f}" x2="{W - M_RIGHT}" y2="{y:.1f}" '
                        'stroke="#f1f3f5"/>')
            axes.append(f'<text x="{M_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                        f'{yfmt(t)}</text>')
        axes.append(f'<text x="{(M_LEFT + W - M_RIGHT) / 2}" y="{H - 8}" '
                    f'text-anchor="middle">{html.escape(self.xlabel)}</text>')
        axes.append(f'<text x="14" y="{(M_TOP + H - M_BOTTOM) / 2}" text-anchor="middle" '
                    f'transform="rotate(-90 14 {(M_TOP + H - M_BOTTOM) / 2})">'
                    f'{html.escape(self.ylabel)}</text>')
        for i, (name, color) in enumerate(legend or []):
            lx, ly = W - M_RIGHT - 150, M_TOP + 6 + i * 15
            axes.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{color}"/>'
                        f'<text x="{lx + 14}" y="{ly + 9}">{html.escape(name)}</text>')
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
                f'viewBox="0 0 {W} {H}">' + "".join(axes + self.parts) + "</svg>")


def _num(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.0e}"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        out += [m * 10 ** e for m in (1, 2, 5) if lo <= m * 10 ** e <= hi]
    return out


def _empty(what: str) -> str:
    return f"<p>no {what} in this run</p>"


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank, as the load report's p50/p99."""
    if not sorted_values:
        return 0.0
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[min(k, len(sorted_values) - 1)]


def histogram_bins(lat_ms: list[float], bins_per_decade: int = 10) -> list[tuple]:
    """Log-spaced bins over the data: [(lo, hi, count)], every value in exactly one
    (values under 0.01 ms count in the first bin)."""
    step = 1 / bins_per_decade
    start = math.floor(math.log10(max(min(lat_ms), 0.01)) / step)
    edges = [10 ** (start * step)]
    while len(edges) < 2 or edges[-1] <= max(lat_ms):
        edges.append(10 ** ((start + len(edges)) * step))
    counts = Counter(max(bisect.bisect_right(edges, v) - 1, 0) for v in lat_ms)
    return [(edges[i], edges[i + 1], counts.get(i, 0)) for i in range(len(edges) - 1)]


def latency_histogram(lat_ms: list[float]) -> str:
    if not lat_ms:
        return _empty("answers")
    bins = histogram_bins(lat_ms)
    top = max(c for _, _, c in bins)
    p = Plot(bins[0][0], bins[-1][1], 0, top * 1.1, xlabel="latency (ms, log scale)",
             ylabel="requests", xlog=True)
    for lo, hi, c in bins:
        x0, x1, y = p.x(lo), p.x(hi), p.y(c)
        p.add(f'<rect class="bin" data-count="{c}" x="{x0 + 0.5:.1f}" y="{y:.1f}" '
              f'width="{max(x1 - x0 - 1, 0.5):.1f}" height="{p.y(0) - y:.1f}" '
              f'fill="#1c7ed6"><title>{lo:.3g}-{hi:.3g} ms: {c}</title></rect>')
    for q, color in ((50, "#2b8a3e"), (99, "#c92a2a")):
        v = percentile(lat_ms, q)
        p.add(f'<line x1="{p.x(v):.1f}" y1="{M_TOP}" x2="{p.x(v):.1f}" y2="{p.y(0):.1f}" '
              f'stroke="{color}" stroke-dasharray="4 3"/><text x="{p.x(v) + 3:.1f}" '
              f'y="{M_TOP + 10}" fill="{color}">p{q} {v:.1f} ms</text>')
    return p.svg(_log_ticks(bins[0][0], bins[-1][1]), _nice_ticks(0, top * 1.1))


def percentile_curve(lat_ms: list[float]) -> str:
    if not lat_ms:
        return _empty("answers")
    qs = [q / 10 for q in range(0, 1000)] + [99.9, 99.99, 100]
    pts = sorted({(q, percentile(lat_ms, q)) for q in qs})
    hi = max(v for _, v in pts)
    p = Plot(0, 100, max(min(lat_ms), 0.01), hi * 1.2, xlabel="percentile",
             ylabel="latency (ms, log scale)", ylog=True)
    path = " ".join(f"{'M' if i == 0 else 'L'}{p.x(q):.1f},{p.y(v):.1f}"
                    for i, (q, v) in enumerate(pts))
    p.add(f'<path class="curve" d="{path}" fill="none" stroke="#1c7ed6" stroke-width="2"/>')
    for q in (50, 90, 99):
        v = percentile(lat_ms, q)
        p.add(f'<circle cx="{p.x(q):.1f}" cy="{p.y(v):.1f}" r="3" fill="#c92a2a"/>'
              f'<text x="{p.x(q) - 4:.1f}" y="{p.y(v) - 6:.1f}" text-anchor="end">'
              f'p{q} {v:.1f} ms</text>')
    return p.svg([0, 25, 50, 75, 90, 100], _log_ticks(max(min(lat_ms), 0.01), hi * 1.2))


def per_second(samples: list[Sample]) -> list[tuple[int, int, int]]:
    """[(second, answers, approved)] for every second from 0 to the last answer."""
    answers: Counter = Counter()
    approved: Counter = Counter()
    for t, _lat, code, _net in samples:
        if code != "error":
            answers[int(t)] += 1
            approved[int(t)] += code in APPROVED
    last = max(answers, default=-1)
    return [(s, answers[s], approved[s]) for s in range(last + 1)]


def _line_chart(points: list[tuple[float, float]], ymax: float, ylabel: str, cls: str,
                yfmt=None) -> str:
    last = max(points[-1][0], 1)
    p = Plot(0, last, 0, ymax, xlabel="seconds since start", ylabel=ylabel)
    path = " ".join(f"{'M' if i == 0 else 'L'}{p.x(x):.1f},{p.y(y):.1f}"
                    for i, (x, y) in enumerate(points))
    p.add(f'<path class="{cls}" d="{path}" fill="none" stroke="#1c7ed6" stroke-width="2"/>')
    return p.svg(_nice_ticks(0, last), _nice_ticks(0, ymax), yfmt=yfmt)


def throughput_chart(samples: list[Sample]) -> str:
    secs = per_second(samples)
    if not secs:
        return _empty("answers")
    return _line_chart([(s + 0.5, n) for s, n, _ in secs],
                       max(n for _, n, _ in secs) * 1.15, "answers / s", "throughput")


def approval_chart(samples: list[Sample]) -> str:
    secs = [(s + 0.5, a / n) for s, n, a in per_second(samples) if n]
    if not secs:
        return _empty("answers")
    return _line_chart(secs, 1.0, "approved", "approval", yfmt=lambda v: f"{v:.0%}")


RISK_BIN = 50  # score points per bin (0-999 in 20 bins)


def risk_bins(scores: list[int]) -> list[float]:
    """Share of ``scores`` in each RISK_BIN-wide bin of 0-999."""
    counts = Counter(min(s, 999) // RISK_BIN for s in scores)
    n = len(scores) or 1
    return [counts.get(i, 0) / n for i in range(1000 // RISK_BIN)]


def risk_scores(risk: dict, threshold: int | None = None) -> str:
    """Good vs fraud score distributions (the demo's labelled feed)."""
    good, fraud = risk.get("scores_good") or [], risk.get("scores_fraud") or []
    if not good and not fraud:
        return _empty("risk scores")
    series = (("good", risk_bins(good), "#2b8a3e"), ("fraud", risk_bins(fraud), "#c92a2a"))
    floor = 1e-4
    p = Plot(0, 1000, floor, 1.0, xlabel="risk score", ylabel="share (log scale)", ylog=True)
    for name, shares, color in series:
        path = " ".join(f"{'M' if i == 0 else 'L'}{p.x(i * RISK_BIN + RISK_BIN / 2):.1f},"
                        f"{p.y(max(v, floor)):.1f}" for i, v in enumerate(shares))
        p.add(f'<path class="risk-{name}" d="{path}" fill="none" stroke="{color}" '
              f'stroke-width="2"><title>{name}</title></path>')
    t = threshold if threshold is not None else risk.get("decline_threshold")
    if t:
        p.add(f'<line x1="{p.x(t):.1f}" y1="{M_TOP}" x2="{p.x(t):.1f}" y2="{p.y(floor):.1f}" '
              f'stroke="#495057" stroke-dasharray="4 3"/>')
    legend = (f'<p class="note">good: {len(good)} (green), fraud: {len(fraud)} (red); '
              f'precision {risk.get("precision")}, recall {risk.get("recall")}</p>')
    return p.svg([0, 200, 400, 600, 800, 1000], _log_ticks(floor, 1.0)) + legend


def codes_by_network(samples: list[Sample]) -> str:
    by_net: dict[str, Counter] = {}
    for _t, _lat, code, net in samples:
        by_net.setdefault(net, Counter())[code] += 1
    if not by_net:
        return _empty("requests")
    codes = sorted({c for cnt in by_net.values() for c in cnt},
                   key=lambda c: (c != "00", c))
    color = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(codes)}
    nets = sorted(by_net)
    row_h, label_w, bar_w = 34, 110, W - 110 - M_RIGHT
    height = M_TOP + row_h * len(nets) + 20 + 16 * math.ceil(len(codes) / 4)
    parts = []
    for i, net in enumerate(nets):
        cnt, y, x = by_net[net], M_TOP + i * row_h, float(label_w)
        n = sum(cnt.values())
        parts.append(f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">'
                     f'{html.escape(net)} ({n})</text>')
        for code in codes:
            if cnt[code]:
                w = bar_w * cnt[code] / n
                parts.append(f'<rect class="code" data-network="{html.escape(net)}" '
                             f'data-code="{html.escape(code)}" data-count="{cnt[code]}" '
                             f'x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 8}" '
                             f'fill="{color[code]}"><title>{html.escape(net)} '
                             f'{html.escape(code)}: {cnt[code]}</title></rect>')
                if w > 28:
                    parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 17}" '
                                 f'text-anchor="middle" style="fill:#fff">'
                                 f'{html.escape(code)}</text>')
                x += w
    ly = M_TOP + row_h * len(nets) + 12
    for i, code in enumerate(codes):
        lx, yy = label_w + (i % 4) * 160, ly + (i // 4) * 16
        name = CODE_NAMES.get(code, "")
        parts.append(f'<rect x="{lx}" y="{yy}" width="10" height="10" fill="{color[code]}"/>'
                     f'<text x="{lx + 14}" y="{yy + 9}">{html.escape(code)} '
                     f'{html.escape(name)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
            f'viewBox="0 0 {W} {height}">' + "".join(parts) + "</svg>")
