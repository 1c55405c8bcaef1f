"""Scrape-time gauges never break a scrape: a writer without the expected channel gives
NaN, a real BatchWriter gives its queue depth."""

from __future__ import annotations

import math

import trio
import trio.testing

import payswitch.ledger as L
from payswitch.switch.metrics import queue_depth


def test_queue_depth_of_a_real_batch_writer_and_of_something_else():
    async def main() -> None:
        writer = L.BatchWriter("postgresql://127.0.0.1:1/unused",
                               config=L.WriterConfig(queue_max=5))
        assert queue_depth(writer) == 0
        async with trio.open_nursery() as nursery:  # the writer is not running: it waits
            nursery.start_soon(writer.create_transfers, [L.Transfer(1, 2, 3, 4, 840, 1)])
            await trio.testing.wait_all_tasks_blocked()
            assert queue_depth(writer) == 1
            nursery.cancel_scope.cancel()
        assert queue_depth(writer) == 0  # its caller gave up: out of the queue
    trio.run(main)
    assert math.isnan(queue_depth(object()))
