"""Scrape-time gauges never break a scrape: a writer without the expected channel gives
NaN, a real BatchWriter gives its queue depth."""

from __future__ import annotations

import math

import trio

import payswitch.ledger as L
from payswitch.switch.metrics import queue_depth


def test_queue_depth_of_a_real_batch_writer_and_of_something_else():
    async def main() -> None:
        writer = L.BatchWriter("postgresql://127.0.0.1:1/unused",
                               config=L.WriterConfig(queue_max=5))
        assert queue_depth(writer) == 0
        writer._send.send_nowait(object())  # one queued request (the writer is not running)
        assert queue_depth(writer) == 1
    trio.run(main)
    assert math.isnan(queue_depth(object()))
