"""The fraud simulator's traffic as ISO 8583 requests for a live switch, and the score
of the switch's decisions against the labels afterwards.

``build_feed`` turns ``fraud.simulate``'s authorizations into 0200s: DE7 is the
simulated time (a switch with ``switch.risk_clock = "transmission_time"`` windows on
it), DE42 / DE18 / DE19 / DE22 / DE3 as simulated, DE41 one of ``terminals`` configured
feed terminals (the simulated terminal ids hashed onto them). The labels are returned
beside the messages and never put in them: they stay on this side.

``score`` compares what the switch decided (by duplicate key: DE41, STAN, DE7, amount)
with the labels: declines by pattern, precision and recall, false positives on good
traffic. Authorizations of the warm-up day (day 0) are sent but not scored.
"""

from __future__ import annotations

import collections
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from payswitch.codecs.iso8583.message import Message
from payswitch.simulators.fraud import DAY_MS, EPOCH_MS, CardAuth, simulate
from payswitch.simulators.terminal import TransportError, open_link

FEED_PREFIX = "SIMT"  # DE41 of the feed's terminals: SIMT0001..
FEED_TERMINALS = 32


@dataclass(frozen=True, slots=True)
class FeedItem:
    message: Message
    label: str  # "" good, else the fraud pattern: never sent
    scored: bool  # not the warm-up day


def _de7(at_ms: int) -> str:
    return time.strftime("%m%d%H%M%S", time.gmtime(at_ms / 1000))


def _expiry(at_ms: int) -> str:
    """DE14, YYMM: the card is valid for 4 more years. Every feed request carries it
    (there is no track 2): an issuer that finds the PAN on file checks the date, and
    without DE14 it answers 30 (format error)."""
    year = time.gmtime(at_ms / 1000).tm_year + 4
    return f"{year % 100:02d}12"


def to_message(a: CardAuth, i: int, terminals: int = FEED_TERMINALS,
               prefix: str = FEED_PREFIX) -> Message:
    de41 = f"{prefix}{zlib.crc32(a.terminal_id.encode()) % terminals + 1:04d}"
    de7 = _de7(a.at_ms)
    return Message(mti="0200", pan=a.pan, expiry=_expiry(a.at_ms),
                   processing_code=a.processing_code,
                   amount_minor=a.amount_minor, transmission_time=de7,
                   stan=f"{i % 1_000_000:06d}", local_time=de7[4:], local_date=de7[:4],
                   mcc=a.mcc, acquirer_country=a.country, pos_entry_mode=a.pos_entry_mode + "1",
                   pos_condition="00", terminal_id=de41,
                   merchant_id=a.merchant_id[:15].ljust(15), currency=a.currency)


def build_feed(seed: int, cards: int = 400, days: int = 2,
               fraud_rate: float = 0.03) -> list[FeedItem]:
    sim = simulate(seed, cards=cards, days=days, fraud_rate=fraud_rate)
    return [FeedItem(to_message(a, i), label, a.at_ms >= EPOCH_MS + DAY_MS)
            for i, (a, label) in enumerate(zip(sim.auths, sim.labels, strict=True))]


def dup_key(m: Message) -> str:
    """The switch's duplicate key of a terminal request (switch/messages.py)."""
    return "|".join((f"T:{m.terminal_id}", "0200", m.stan or "", m.transmission_time or "",
                     str(m.amount_minor)))


async def send_feed(host: str, port: int, feed: list[FeedItem], workers: int = 4,
                    timeout_s: float = 10.0, rate: float | None = None) -> dict[str, str]:
    """Send every request (in time order, ``workers`` connections, one request in flight
    on each); returns the DE39 each got, by duplicate key ("" when none came).

    ``rate``: paced. The i-th request leaves no earlier than i / rate s after the first,
    so the feed is a fixed share of the switch's load over a known time, whatever runs
    beside it; and each card keeps to one connection, so a card's requests reach the
    switch one after the other, in their order, however many others are in flight.
    Without: each connection takes the next request as soon as it has its answer."""
    codes: dict[str, str] = {}
    start: list[float] = []  # when the first request left

    async def worker(items) -> None:
        try:
            async with open_link(host, port) as link:
                for i, item in items:
                    if rate:
                        if not start:
                            start.append(trio.current_time())
                        await trio.sleep_until(start[0] + i / rate)
                    r = await link.request(item.message, timeout_s)
                    codes[dup_key(item.message)] = (
                        r.response.response_code or "" if r.response else "")
        except TransportError:
            return  # unsent ones are not scored

    if rate:  # lanes: every request of a card on the same connection, in order
        sources = [iter(lane) for lane in _card_lanes(feed, workers) if lane]
    else:  # shared: the rest go to the other workers when one fails
        shared = iter(enumerate(feed))
        sources = [shared] * workers
    async with trio.open_nursery() as n:
        for items in sources:
            n.start_soon(worker, items)
    return codes


def _card_lanes(feed: list[FeedItem], lanes: int) -> list[list[tuple[int, FeedItem]]]:
    """(index, item) per lane, each card's requests in one lane, in feed order; the
    cards with most requests placed first, each on the lane with fewest so far, so no
    lane (one request in flight) has much more to send than the others."""
    by_card: dict[str, list[tuple[int, FeedItem]]] = collections.defaultdict(list)
    for i, item in enumerate(feed):
        by_card[item.message.pan or ""].append((i, item))
    out: list[list[tuple[int, FeedItem]]] = [[] for _ in range(lanes)]
    for items in sorted(by_card.values(), key=lambda x: (-len(x), x[0][0])):
        min(out, key=len).extend(items)
    for lane in out:
        lane.sort(key=lambda x: x[0])
    return out


def score(feed: list[FeedItem], flagged: Mapping[str, bool]) -> dict:
    """``flagged``: by duplicate key, whether the switch declined (or, in shadow mode,
    would have declined) it for risk. Only scored items the switch decided count."""
    by_pattern: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    tp = fp = fn = tn = 0
    for item in feed:
        key = dup_key(item.message)
        if not item.scored or key not in flagged:
            continue
        hit = flagged[key]
        row = by_pattern[item.label or "good"]
        row[0] += 1
        row[1] += hit
        if item.label:
            tp, fn = tp + hit, fn + (not hit)
        else:
            fp, tn = fp + hit, tn + (not hit)
    return {
        "scored": tp + fp + fn + tn, "fraud": tp + fn,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "false_positive_rate": round(fp / (fp + tn), 5) if fp + tn else None,
        "by_pattern": {k: {"n": v[0], "declined": v[1]} for k, v in sorted(by_pattern.items())},
    }
