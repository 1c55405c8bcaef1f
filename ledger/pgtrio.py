"""libpq in non-blocking mode with trio waiting on the connection's socket: how the
ledger's batch writer and the switch's journal send their hot-path statements without a
thread (no GIL handoff, no hop back to trio)."""

from __future__ import annotations

from typing import Any

import trio
from psycopg import generators


async def drive(gen: Any, fd: int, wait: Any = None) -> Any:
    """Run a psycopg generator (e.g. ``generators.execute(pgconn)``) to its end, trio
    waiting on the socket ``fd`` whenever libpq would block; its return value.
    ``wait``: what the generator's first step asked for, when the caller took that
    step itself (to skip a cancel scope when it asked for nothing)."""
    try:
        if wait is None:
            wait = next(gen)
        while True:
            if wait == generators.WAIT_R:
                await trio.lowlevel.wait_readable(fd)
                wait = gen.send(generators.READY_R)
            else:
                await trio.lowlevel.wait_writable(fd)
                wait = gen.send(generators.READY_W if wait == generators.WAIT_W
                                else generators.READY_RW)
    except StopIteration as done:
        return done.value
