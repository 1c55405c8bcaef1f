"""The demo's risk, routing and stand-in part (issue 10): its config lines, the model
it builds when the cache has none, the labelled fraud feed, and the figures.

The demo's own load uses a handful of test cards hundreds of times a minute: enforced
risk rules would decline all of them. So the demo scores in **shadow mode**: every
authorization is scored and journalled, nothing is declined for risk, and the figures
are what enforcing would have declined (``would = "decline"`` on the ``risk_scored``
rows). The fraud feed (simulators/fraudfeed.py) sends a simulated population's days
with DE7 on the simulated timeline (``switch.risk_clock = "transmission_time"``);
its labels stay in this process and are compared with the journal afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from payswitch.simulators.fraudfeed import FEED_PREFIX, FEED_TERMINALS, FeedItem, score

MODEL_SEED = 1
DECLINE, REFER = 349, 174  # routing/README.md: the benchmark's validation choice
STANDIN = {"max_daily_count": 3, "max_daily_amount_minor": 50_000,
           "max_single_amount_minor": 20_000, "processing_codes": ["00", "01"],
           "max_risk_score": 500, "require_card_checks": False}


def cache_dir() -> Path:
    """Where built artefacts live (never in the repo): $PAYSWITCH_CACHE, else
    $XDG_CACHE_HOME/payswitch, else ~/.cache/payswitch."""
    env = os.environ.get("PAYSWITCH_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "payswitch"


def ensure_model(argv_of, timeout_s: float = 900.0) -> Path | None:
    """The model file, built by ``payswitch risk train`` when the cache has none; None
    (rules only) when training fails."""
    path = cache_dir() / f"risk-model-seed{MODEL_SEED}.txt"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    done = subprocess.run(argv_of("risk", "train", "--seed", str(MODEL_SEED), "--out",
                                  str(tmp)), capture_output=True, timeout=timeout_s,
                          check=False)
    if done.returncode != 0:
        return None
    tmp.replace(path)
    return path


def config_lines(model: Path | None, standin: dict | None = None) -> list[str]:
    """[risk] (shadow), [routing] (breakers; stand-in for the Visa range) and the feed's
    terminals. ``risk_clock`` goes into [switch]: see ``switch_line``."""
    lines = ["[risk]", 'mode = "shadow"', f"use_model = {'true' if model else 'false'}"]
    if model:
        lines.append(f"model_file = {json.dumps(str(model))}")
    lines += ["[risk.thresholds]", f"decline = {DECLINE}", f"refer = {REFER}",
              "[risk.rules]", "max_card_1m = 6", "max_card_small_1h = 8",
              "max_merchant_bin_cards_1h = 12", "", "[routing]",
              "[routing.health]", "min_requests = 10", "failure_rate = 0.5",
              "open_ms = 5000", "[[routing.ranges]]", 'prefix = "4"',
              'routes = [{ link = "visa" }]', '[routing.standin."4"]']
    lines += [f"{k} = {json.dumps(v)}" for k, v in (standin or STANDIN).items()] + [""]
    for i in range(1, FEED_TERMINALS + 1):
        lines += ["[[terminals]]", f'id = "{FEED_PREFIX}{i:04d}"', 'source = "127.0.0.1"', ""]
    return lines


SWITCH_LINE = 'risk_clock = "transmission_time"'


def figures(dsn: str, feed: list[FeedItem], switch_log: str) -> dict:
    """Risk (shadow) decisions against the feed's labels, breaker transitions (the
    switch's ``breaker`` log lines), failovers and stand-in from the journal, advices
    from the SAF table."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select dup_key, fields->>'would', (fields->>'score')::int from switch_journal"
            " where event = 'risk_scored'").fetchall()
        failovers = conn.execute("select count(*) from switch_journal"
                                 " where event = 'failover'").fetchone()[0]
        standin = dict(conn.execute(
            "select fields->>'response_code', count(*) from switch_journal"
            " where event = 'standin' group by 1").fetchall())
        advices = dict(conn.execute(
            "select state, count(*) from switch_saf where mti in ('0120', '0220')"
            " group by state").fetchall())
    flagged = {k: w == "decline" for k, w, _ in rows}
    scores = {k: s for k, _, s in rows}
    risk = score(feed, flagged)
    risk["scores_good"] = [scores[k] for k in _keys(feed, good=True) if k in scores]
    risk["scores_fraud"] = [scores[k] for k in _keys(feed, good=False) if k in scores]
    risk["scored_all"] = len(rows)
    risk["decline_threshold"] = DECLINE
    risk["would_decline_all"] = sum(flagged.values())
    breaker = [json.loads(line) for line in switch_log.splitlines()
               if '"event":"breaker"' in line.replace(" ", "")]
    return {"risk": risk,
            "breaker_transitions": [(b.get("link"), b.get("previous"), b.get("state"))
                                    for b in breaker],
            "failovers": int(failovers),
            "standin": {"approved": int(standin.get("00", 0)),
                        "refused": int(standin.get("91", 0)),
                        "advices": {k: int(v) for k, v in advices.items()}}}


def _keys(feed: list[FeedItem], good: bool) -> list[str]:
    from payswitch.simulators.fraudfeed import dup_key

    return [dup_key(i.message) for i in feed if i.scored and (not i.label) == good]


def format_lines(f: dict) -> list[str]:
    r = f["risk"]
    lines = [f"  risk (shadow: what enforcing would decline): {r['scored_all']} scored, "
             f"{r['would_decline_all']} would be declined",
             f"    fraud feed vs labels: {r['scored']} scored ({r['fraud']} fraud), "
             f"precision {r['precision']}, recall {r['recall']}, "
             f"FPR {r['false_positive_rate']}"]
    lines += [f"      {k}: {v['declined']}/{v['n']}" for k, v in r["by_pattern"].items()]
    s = f["standin"]
    lines += [f"  breaker transitions: {f['breaker_transitions'] or 'none'}",
              f"  failovers: {f['failovers']}; stand-in: {s['approved']} approved, "
              f"{s['refused']} refused (limits); advices {s['advices'] or 'none'}"]
    return lines
