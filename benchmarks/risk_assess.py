"""What one scored authorization costs the switch: ``RiskScorer.assess`` (features,
state update, rules, model, decision, reasons) on the demo's model and config, per
request, against baselines measured in the same run.

    python -m benchmarks.run risk_assess [--json]

The model is the demo's (``lab/riskdemo.py: ensure_model``, built by ``payswitch risk
train --seed 1`` into the cache when missing, ~30 s once) and so is the ``[risk]``
section (shadow, enforced for the fraud feed's terminals, its rules and thresholds).
Two streams, each scored after a warm-up, times on whole seconds as DE7 gives them:

- ``demo_load``: what the demo's terminals send: the load's card mix (a few test cards,
  hundreds of times a minute), one merchant, 16 terminals, 200 requests/s; DE7 is
  stamped 0-3 ms before the switch reads it, so a second's boundary now and then
  arrives out of order.
- ``fraud_feed``: the feed's shape: a simulated population (``simulators/fraud.py``,
  seed 2) on the feed's 32 terminals, no location, on its own timeline.

Per stream, CPU µs per request (p50, p99, mean): ``assess`` as the switch runs it;
``assess_scan`` the same with every window scanned (``RiskState(windows=False)``, how
features were read before the running windows: the in-run before); ``journal_row``
(``switch/risk.py: journal_fields``). Per-row baselines on the stream's own feature
rows: ``lightgbm_predict`` (LightGBM's ``Booster.predict`` on one row: the trees
evaluated by the library that trained them), ``trees_raw`` (the compiled walk alone),
``reasons`` (path attribution, top 3), ``bare_features`` (three dict look-ups and a
39-tuple: the floor of any feature pass). ``reads_by_windows``: the share of card,
merchant and terminal reads served without a scan.

Also runs from another checkout (``python /path/to/benchmarks/risk_assess.py`` with
that checkout's Python) for before/after pairs; what that code lacks is left out.
"""

from __future__ import annotations

import json as jsonlib
import os
import platform
import random
import statistics
import sys
import time
import tomllib
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from payswitch.lab import riskdemo
from payswitch.lab.risk_cli import auth_input as sim_auth_input
from payswitch.routing import risk_features
from payswitch.routing.risk_decision import RiskScorer
from payswitch.routing.risk_features import FEATURES, AuthInput, RiskState, entry_mode_of
from payswitch.routing.risk_model import RiskModel
from payswitch.routing.risk_rules import RiskConfig
from payswitch.simulators.cards import BY_NAME
from payswitch.simulators.fraud import simulate
from payswitch.simulators.fraudfeed import FEED_PREFIX, FEED_TERMINALS
from payswitch.simulators.load import CARD_MIXES
from payswitch.switch.risk import journal_fields

LOAD_RATE = 200.0  # requests/s, about the demo's switch
LOAD_WARM, LOAD_SCORED = 20_000, 10_000
FEED_SEED, FEED_CARDS, FEED_DAYS = 2, 3_000, 2
START_MS = 1_795_000_000_000
ROW_ROUNDS = 3


def _model_and_config() -> tuple[RiskModel, RiskConfig]:
    def argv_of(*args: str) -> list[str]:
        return [sys.executable, "-m", "payswitch.lab.cli", *args]

    path = riskdemo.ensure_model(argv_of)
    if path is None:
        raise SystemExit("risk_assess: cannot build the demo's model (payswitch risk train)")
    toml = tomllib.loads("\n".join(riskdemo.config_lines(path)))
    return RiskModel.load(path), RiskConfig.from_dict(toml["risk"])


def demo_load() -> list[AuthInput]:
    """The demo's terminals (simulators/load.py, profile "mixed"), as the switch reads
    them: PAN token, DE22 entry mode, DE7 on whole seconds stamped 0-3 ms before."""
    rng = random.Random(1)
    mix = CARD_MIXES["mixed"]
    cards = [BY_NAME[n] for n in mix]
    weights = list(mix.values())
    out, t = [], START_MS / 1000
    for _ in range(LOAD_WARM + LOAD_SCORED):
        t += rng.expovariate(LOAD_RATE)
        card = rng.choices(cards, weights)[0]
        kind = rng.random()
        cash = kind > 0.85
        out.append(AuthInput(
            at_ms=int(t - rng.uniform(0, 0.003)) * 1000,
            card_token=f"tok-{card.pan[-8:]}", bin6=card.pan[:6],
            amount_minor=rng.randrange(100, 20_000), mcc="6011" if cash else "5999",
            merchant_id="DEMOMERCHANT001", terminal_id=f"DEMO{rng.randrange(1, 17):04d}",
            country="840", lat=None, lon=None,
            entry_mode=entry_mode_of("05" if rng.random() < 0.8 else "90"), is_cash=cash))
    return out


def fraud_feed() -> tuple[list[AuthInput], int]:
    """The feed's population on its 32 terminals, no location, DE7's whole seconds;
    the index where its last day (the scored part) starts."""
    sim = simulate(FEED_SEED, cards=FEED_CARDS, days=FEED_DAYS)
    out, first = [], None
    for i, rec in enumerate(sim.auths):
        a = sim_auth_input(rec)
        tid = f"{FEED_PREFIX}{zlib.crc32(a.terminal_id.encode()) % FEED_TERMINALS + 1:04d}"
        out.append(AuthInput(at_ms=a.at_ms // 1000 * 1000, card_token=a.card_token,
                             bin6=a.bin6, amount_minor=a.amount_minor, mcc=a.mcc,
                             merchant_id=a.merchant_id[:15], terminal_id=tid,
                             country=a.country, lat=None, lon=None,
                             entry_mode=a.entry_mode, is_cash=a.is_cash))
        if first is None and sim.day_of(i) == FEED_DAYS - 1:
            first = i
    return out, first or 0


def _state(windows: bool) -> RiskState | None:
    try:
        return RiskState(windows=windows)  # type: ignore[call-arg]
    except TypeError:  # a checkout without running windows: it always scans
        return None if not windows else RiskState()


def _pct(values: list[float]) -> dict:
    return {"p50": round(float(np.percentile(values, 50)), 1),
            "p99": round(float(np.percentile(values, 99)), 1),
            "mean": round(statistics.fmean(values), 1)}


def _timed_assess(model: RiskModel, cfg: RiskConfig, stream: list[AuthInput], scored_from: int,
                  windows: bool) -> tuple[list[float], list[float], list]:
    """Per scored request: CPU µs of assess, of its journal row; its feature rows."""
    state = _state(windows)
    if state is None:
        return [], [], []
    scorer = RiskScorer(cfg, state, model)
    for a in stream[:scored_from]:  # warm-up: assessed, not timed
        scorer.assess(a, "visa")
    us, row_us, rows = [], [], []
    clock = time.process_time_ns
    for a in stream[scored_from:]:
        if len(rows) < 2_000:
            rows.append(state.features(a))  # read only: the next features() reads the same
        start = clock()
        d = scorer.assess(a, "visa")
        mid = clock()
        journal_fields(d, a)
        end = clock()
        us.append((mid - start) / 1000)
        row_us.append((end - mid) / 1000)
    return us, row_us, rows


def _per_row(fn: Callable, rows: list) -> float:
    """Median over ROW_ROUNDS rounds of CPU µs per row."""
    rounds = []
    for _ in range(ROW_ROUNDS):
        start = time.process_time_ns()
        for r in rows:
            fn(r)
        rounds.append((time.process_time_ns() - start) / 1000 / len(rows))
    return round(statistics.median(rounds), 2)


def _bare_features(stream: list[AuthInput]) -> float:
    """The floor of a feature pass: the card's, merchant's and terminal's entries looked
    up in dicts and a 39-float tuple built from them, per request (CPU µs)."""
    cards = {a.card_token: [0.0] * 26 for a in stream}
    places = {a.merchant_id: [0.0] * 6 for a in stream}
    terms = {a.terminal_id: [0.0] * 2 for a in stream}
    start = time.process_time_ns()
    for a in stream:
        c, m, t = cards.get(a.card_token), places.get(a.merchant_id), terms.get(a.terminal_id)
        (float(a.amount_minor), 0.0, float(a.entry_mode), float(a.is_cash), 0.0,
         *c, *m, *t)  # type: ignore[misc]
    return round((time.process_time_ns() - start) / 1000 / len(stream), 2)


def _window_share(model: RiskModel, cfg: RiskConfig, stream: list[AuthInput],
                  scored_from: int) -> float | None:
    """Of the scored part's card, merchant and terminal reads, the share the running
    windows answered (an untimed pass)."""
    names = [n for n in ("_windows", "_place_windows") if hasattr(risk_features, n)]
    if not names:
        return None
    served = [0, 0]
    originals = {n: getattr(risk_features, n) for n in names}

    def counting(find: Callable) -> Callable:
        def wrapped(*args):
            w = find(*args)
            served[0] += w is not None
            served[1] += 1
            return w
        return wrapped

    scorer = RiskScorer(cfg, RiskState(), model)
    for a in stream[:scored_from]:
        scorer.assess(a, "visa")
    for n, find in originals.items():
        setattr(risk_features, n, counting(find))
    try:
        for a in stream[scored_from:]:
            scorer.assess(a, "visa")
    finally:
        for n, find in originals.items():
            setattr(risk_features, n, find)
    return round(served[0] / max(1, served[1]), 3)


def measure_stream(model: RiskModel, cfg: RiskConfig, stream: list[AuthInput],
                   scored_from: int) -> dict:
    us, row_us, rows = _timed_assess(model, cfg, stream, scored_from, True)
    scan_us, _, _ = _timed_assess(model, cfg, stream, scored_from, False)
    out: dict = {"scored": len(us), "assess_us": _pct(us)}
    if scan_us:
        out["assess_scan_us"] = _pct(scan_us)
    out["journal_row_us"] = _pct(row_us)
    x = [np.asarray([r], dtype=np.float64) for r in rows]
    out["per_row_us"] = {
        "lightgbm_predict": _per_row(lambda r: model.booster.predict(r, num_threads=1), x),
        "trees_raw": _per_row(model.trees.raw, rows),
        "reasons": _per_row(model.top_contributions, rows),
        "bare_features": _bare_features(stream[scored_from:]),
    }
    out["reads_by_windows"] = _window_share(model, cfg, stream, scored_from)
    return out


def measure() -> dict:
    model, cfg = _model_and_config()
    feed, feed_from = fraud_feed()
    result = {
        "demo_load": measure_stream(model, cfg, demo_load(), LOAD_WARM),
        "fraud_feed": measure_stream(model, cfg, feed, feed_from),
        "trees": model.trees.n_trees, "features": len(FEATURES),
        "code": os.path.dirname(os.path.dirname(os.path.abspath(risk_features.__file__))),
        "machine": {"python": platform.python_version(), "machine": platform.machine(),
                    "loadavg": Path("/proc/loadavg").read_text().split()[:3]
                    if Path("/proc/loadavg").exists() else None},
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return result


def main(json: bool = False) -> int:
    r = measure()
    if json:
        print(jsonlib.dumps(r, indent=1))
        return 0
    print(f"{r['utc']} load {' '.join(r['machine']['loadavg'] or [])} code {r['code']}")
    for name in ("demo_load", "fraud_feed"):
        s = r[name]
        scan = s.get("assess_scan_us")
        rows = s["per_row_us"]
        print(f"{name:10s} assess µs p50 {s['assess_us']['p50']} p99 {s['assess_us']['p99']} "
              f"mean {s['assess_us']['mean']}"
              + (f" (all scanned: p50 {scan['p50']} p99 {scan['p99']} mean {scan['mean']})"
                 if scan else "")
              + f"; journal row {s['journal_row_us']['mean']}; per row: LightGBM predict "
              f"{rows['lightgbm_predict']}, compiled trees {rows['trees_raw']}, reasons "
              f"{rows['reasons']}, bare features {rows['bare_features']}; windows answered "
              f"{s['reads_by_windows']} of reads")
    return 0


if __name__ == "__main__":
    sys.exit(main("--json" in sys.argv))
