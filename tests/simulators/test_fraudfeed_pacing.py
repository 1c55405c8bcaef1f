"""The fraud feed paced (send_feed ``rate``): on the wire, the i-th request reaches the
host no earlier than i / rate after the first; every request is still sent and its
DE39 reported. A fake host on 127.0.0.1 answers 00 and notes when each request came."""

from __future__ import annotations

import functools

import trio

from payswitch.codecs.framing import FrameReader, encode_frame
from payswitch.codecs.iso8583 import get
from payswitch.simulators.fraudfeed import build_feed, dup_key, send_feed

DIALECT = get("iso87ascii")


def _run(feed, rate):
    arrived: list[tuple[float, str]] = []

    async def host(stream: trio.SocketStream) -> None:
        reader = FrameReader("len2")
        with trio.move_on_after(20):
            while data := await stream.receive_some(65536):
                for frame in reader.feed(data):
                    msg = DIALECT.decode(frame.payload)
                    arrived.append((trio.current_time(), msg.stan))
                    msg.mti, msg.response_code = "0210", "00"
                    await stream.send_all(encode_frame("len2", DIALECT.encode(msg)))

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

    return trio.run(main), arrived


def test_a_paced_feed_sends_every_request_no_earlier_than_its_slot():
    feed = build_feed(seed=5, cards=20, days=2, fraud_rate=0.1)[:30]
    rate = 60.0  # 30 requests: the last no earlier than 29 / 60 s after the first
    codes, arrived = _run(feed, rate)
    assert codes == {dup_key(i.message): "00" for i in feed}
    (t0, _), *arrived = arrived
    assert len(arrived) == len(feed)
    by_stan = {stan: t - t0 for t, stan in arrived}
    for i, item in enumerate(feed):  # slot i is i / rate after the first left (>= t0)
        assert by_stan[item.message.stan] >= i / rate, (i, by_stan[item.message.stan])


def test_unpaced_the_feed_goes_as_fast_as_the_answers_come():
    feed = build_feed(seed=5, cards=20, days=2, fraud_rate=0.1)[:30]
    codes, (_, *arrived) = _run(feed, None)
    assert len(codes) == len(feed) and all(c == "00" for c in codes.values())
    spread = max(t for t, _ in arrived) - min(t for t, _ in arrived)
    assert spread < 29 / 60.0  # what the paced test above rules out
