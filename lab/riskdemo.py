"""The demo's risk, routing and stand-in part (issue 10): its config lines, the model
it builds when the cache has none, the labelled fraud feed, and the figures.

Risk is **enforced on the fraud feed's terminals** (DE41 ``SIMT...``, a
``[risk.terminal_groups]`` group) and **shadow for the rest**: the demo's own load uses
a handful of test cards hundreds of times a minute, and enforced velocity rules would
decline all of them. The feed's requests that risk declines get DE39 59 (Visa) or 05
(Mastercard's ``decline_code``) and never reach an issuer; the load's are scored and
journalled with what enforcing would have done (``would`` on the ``risk_scored``
rows). The fraud feed (simulators/fraudfeed.py) sends a simulated population's days
with DE7 on the simulated timeline (``switch.risk_clock = "transmission_time"``); its
labels stay in this process and are compared with the journal afterwards.

Stand-in for the Visa range checks PIN (PVV), CVV / iCVV and ARQC with the Visa
issuer's keys, which the demo's key setup shares into the switch's token by label
(``devkeys.make_dev_tokens(..., standin=STANDIN_NETWORKS)``).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from payswitch.routing.risk_rules import VELOCITY_RULES
from payswitch.simulators.fraudfeed import (
    FEED_PREFIX,
    FEED_TERMINALS,
    FeedItem,
    dup_key,
    score,
)

MODEL_SEED = 1
DECLINE, REFER = 349, 174  # routing/README.md: the benchmark's validation choice
STANDIN_NETWORKS = ("visa",)  # the issuers whose keys the switch holds for stand-in
# max_risk_score 999: the load's few test cards score high from sheer velocity (why
# risk is shadow for them); the per-card limits and the card checks still apply
STANDIN = {"max_daily_count": 3, "max_daily_amount_minor": 50_000,
           "max_single_amount_minor": 20_000, "processing_codes": ["00", "01"],
           "max_risk_score": 999, "require_card_checks": True,
           "card_checks": ["pvv", "cvv", "arqc"], "pvk": "pvk.visa", "cvk": "cvk.visa",
           "mkac": "mkac.visa", "check_decline_code": "82"}
RISK_DECLINES = ("59", "05")


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
    """[risk] (shadow; enforced for the feed's terminals), [routing] (breakers;
    stand-in for the Visa range) and the feed's terminals. ``risk_clock`` goes into
    [switch]: see ``SWITCH_LINE``."""
    lines = ["[risk]", 'mode = "shadow"', f"use_model = {'true' if model else 'false'}"]
    if model:
        lines.append(f"model_file = {json.dumps(str(model))}")
    lines += ["[risk.terminal_groups.fraud_feed]", f"terminals = [{json.dumps(FEED_PREFIX)}]",
              'mode = "enforce"', "[risk.issuers.mastercard]", 'decline_code = "05"',
              "[risk.thresholds]", f"decline = {DECLINE}", f"refer = {REFER}",
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


def figures(dsn: str, feed: list[FeedItem], switch_log: str,
            codes: dict[str, str] | None = None) -> dict:
    """Risk decisions against the feed's labels (enforced: what was declined, and the
    DE39 the feed got for it, ``codes`` by duplicate key), the load's shadow figures,
    breaker transitions (the switch's ``breaker`` log lines), failovers and stand-in
    from the journal, advices from the SAF table."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select dup_key, fields->>'action', fields->>'would', (fields->>'score')::int,"
            " fields->'reasons' from switch_journal where event = 'risk_scored'").fetchall()
        failovers = conn.execute("select count(*) from switch_journal"
                                 " where event = 'failover'").fetchone()[0]
        standin = dict(conn.execute(
            "select fields->>'response_code', count(*) from switch_journal"
            " where event = 'standin' group by 1").fetchall())
        advices = dict(conn.execute(
            "select state, count(*) from switch_saf where mti in ('0120', '0220')"
            " group by state").fetchall())
    feed_keys = {dup_key(i.message) for i in feed}
    declined = {k: a == "decline" for k, a, _, _, _ in rows if k in feed_keys}
    scores = {k: s for k, _, _, s, _ in rows}
    risk = score(feed, declined)
    risk["scores_good"] = [scores[k] for k in _keys(feed, good=True) if k in scores]
    risk["scores_fraud"] = [scores[k] for k in _keys(feed, good=False) if k in scores]
    risk["scored_all"] = len(rows)
    risk["decline_threshold"] = DECLINE
    risk["declined_sent"] = _sent_by_pattern(feed, declined, codes or {})
    load = [(w, why or []) for k, _, w, _, why in rows if k not in feed_keys]
    risk["load_shadow"] = {"scored": len(load),
                           "would_decline": sum(w == "decline" for w, _ in load),
                           "top_reasons": _top_reasons(why for w, why in load
                                                       if w == "decline")}
    breaker = [json.loads(line) for line in switch_log.splitlines()
               if '"event":"breaker"' in line.replace(" ", "")]
    return {"risk": risk,
            "breaker_transitions": [(b.get("link"), b.get("previous"), b.get("state"))
                                    for b in breaker],
            "failovers": int(failovers),
            "standin": {"approved": int(standin.get("00", 0)),
                        "refused": int(standin.get("91", 0)),
                        "declined_by_card_check": {k: int(v) for k, v in standin.items()
                                                   if k not in ("00", "91")},
                        "advices": {k: int(v) for k, v in advices.items()}}}


def _sent_by_pattern(feed: list[FeedItem], declined: dict[str, bool],
                     codes: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per pattern ("good" too), the DE39 the feed received for its risk declines."""
    out: dict[str, dict[str, int]] = {}
    for item in feed:
        key = dup_key(item.message)
        if item.scored and declined.get(key):
            code = codes.get(key, "none")
            row = out.setdefault(item.label or "good", {})
            row[code] = row.get(code, 0) + 1
    return dict(sorted(out.items()))


def _top_reasons(reasons: Iterable[list[str]], n: int = 3) -> list[tuple[str, int]]:
    """The reasons most often given: rule ids named by their config key, model
    features without their contribution (``card_n_1m:+1.47`` -> ``card_n_1m``)."""
    counts: collections.Counter[str] = collections.Counter()
    for why in reasons:
        counts.update({_reason_name(r) for r in why})
    return counts.most_common(n)


def _reason_name(reason: str) -> str:
    rule = VELOCITY_RULES.get(reason)
    return f"{reason} {rule[0]}" if rule else reason.split(":")[0]


def _keys(feed: list[FeedItem], good: bool) -> list[str]:
    return [dup_key(i.message) for i in feed if i.scored and (not i.label) == good]


def format_lines(f: dict) -> list[str]:
    r = f["risk"]
    sent = r.get("declined_sent", {})
    lines = [f"  risk, enforced on the fraud feed: {r['scored']} scored ({r['fraud']} fraud), "
             f"precision {r['precision']}, recall {r['recall']}, "
             f"FPR {r['false_positive_rate']}; declines by pattern (DE39 sent):"]
    lines += [f"      {k}: {v['declined']}/{v['n']} {sent.get(k, {})}"
              for k, v in r["by_pattern"].items()]
    shadow = r.get("load_shadow", {})
    top = ", ".join(f"{name} {n}" for name, n in shadow.get("top_reasons", []))
    lines.append(f"  risk, shadow on the load: {shadow.get('scored', 0)} scored, "
                 f"{shadow.get('would_decline', 0)} would be declined"
                 + (f" (the load replays a few test cards at one merchant; reasons: {top})"
                    if top else ""))
    s = f["standin"]
    lines += [f"  breaker transitions: {f['breaker_transitions'] or 'none'}",
              f"  failovers: {f['failovers']}; stand-in: {s['approved']} approved, "
              f"{s['refused']} refused (limits, card not verified), declined by a card "
              f"check {s.get('declined_by_card_check') or 'none'}; advices "
              f"{s['advices'] or 'none'}"]
    return lines
