"""The fraud feed paced (send_feed ``rate``): on the wire, the i-th request reaches the
host no earlier than i / rate after the first; every request is still sent and its
DE39 reported. A fake host on 127.0.0.1 answers 00 and notes when each request came."""

from __future__ import annotations

import functools
import random

import trio

from payswitch.codecs.framing import FrameReader, encode_frame
from payswitch.codecs.iso8583 import get
from payswitch.simulators.fraudfeed import build_feed, dup_key, send_feed

DIALECT = get("iso87ascii")


def _run(feed, rate, answer_ms=0):
    """The host answers each request after 0..answer_ms (seeded), several at once."""
    arrived: list[tuple[float, str]] = []
    open_by_card: dict[str, int] = {}
    overlaps: list[str] = []  # a card with a request in flight got another
    rng = random.Random(3)

    async def host(stream: trio.SocketStream) -> None:
        reader = FrameReader("len2")
        lock = trio.Lock()

        async def answer(msg) -> None:
            await trio.sleep(rng.uniform(0, answer_ms) / 1000)
            open_by_card[msg.pan] -= 1
            msg.mti, msg.response_code = "0210", "00"
            async with lock:
                await stream.send_all(encode_frame("len2", DIALECT.encode(msg)))

        with trio.move_on_after(20):
            async with trio.open_nursery() as n:
                while data := await stream.receive_some(65536):
                    for frame in reader.feed(data):
                        msg = DIALECT.decode(frame.payload)
                        arrived.append((trio.current_time(), msg.stan))
                        if open_by_card.get(msg.pan):
                            overlaps.append(msg.pan)
                        open_by_card[msg.pan] = open_by_card.get(msg.pan, 0) + 1
                        n.start_soon(answer, msg)

    async def main() -> dict[str, str]:
        with trio.fail_after(30):
            async with trio.open_nursery() as n:
                listeners = await n.start(functools.partial(trio.serve_tcp, host, 0,
                                                             host="127.0.0.1"))
                port = listeners[0].socket.getsockname()[1]
                arrived.append((trio.current_time(), "start"))  # same clock as the host's
                codes = await send_feed("127.0.0.1", port, feed, rate=rate)
                n.cancel_scope.cancel()
        return codes

    codes = trio.run(main)
    return codes, arrived, overlaps


def test_a_paced_feed_sends_every_request_no_earlier_than_its_slot():
    feed = build_feed(seed=5, cards=20, days=2, fraud_rate=0.1)[:30]
    rate = 60.0  # 30 requests: the last no earlier than 29 / 60 s after the first
    codes, arrived, _ = _run(feed, rate)
    assert codes == {dup_key(i.message): "00" for i in feed}
    (t0, _), *arrived = arrived
    assert len(arrived) == len(feed)
    by_stan = {stan: t - t0 for t, stan in arrived}
    for i, item in enumerate(feed):  # slot i is i / rate after the first left (>= t0)
        assert by_stan[item.message.stan] >= i / rate, (i, by_stan[item.message.stan])


def test_unpaced_the_feed_goes_as_fast_as_the_answers_come():
    feed = build_feed(seed=5, cards=20, days=2, fraud_rate=0.1)[:30]
    codes, (_, *arrived), _ = _run(feed, None)
    assert len(codes) == len(feed) and all(c == "00" for c in codes.values())
    spread = max(t for t, _ in arrived) - min(t for t, _ in arrived)
    assert spread < 29 / 60.0  # what the paced test above rules out


def test_a_paced_card_never_has_two_requests_in_flight():
    """Paced, each card keeps to one connection: its next request leaves after its
    previous answer, so the switch's per-card risk windows see its requests in order,
    however slowly and out of order the host answers the others."""
    feed = build_feed(seed=5, cards=6, days=2, fraud_rate=0.1)[:60]
    assert len({i.message.pan for i in feed}) < 30  # cards repeat within the slice
    codes, arrived, overlaps = _run(feed, rate=400.0, answer_ms=40)
    assert len(arrived) == len(feed) + 1 and len(codes) == len(feed)
    assert overlaps == []
    order = [stan for _, stan in arrived]
    for pan in {i.message.pan for i in feed}:
        stans = [i.message.stan for i in feed if i.message.pan == pan]
        assert sorted(stans, key=order.index) == stans, pan


def test_card_lanes_keep_each_card_whole_in_order_and_balanced():
    from payswitch.simulators.fraudfeed import _card_lanes

    feed = build_feed(seed=7)
    lanes = _card_lanes(feed, 32)
    assert sorted(i for lane in lanes for i, _ in lane) == list(range(len(feed)))
    for lane in lanes:
        assert [i for i, _ in lane] == sorted(i for i, _ in lane)
    owner = {}
    for k, lane in enumerate(lanes):
        for _, item in lane:
            assert owner.setdefault(item.message.pan, k) == k
    sizes = [len(lane) for lane in lanes]
    assert max(sizes) - min(sizes) <= max(
        sum(1 for i in feed if i.message.pan == p) for p in owner)
