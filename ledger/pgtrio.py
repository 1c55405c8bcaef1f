"""psycopg's async connection driven by trio instead of asyncio.

psycopg does its I/O in generators that yield what the socket must be ready for; its
``AsyncConnection.wait`` runs them on asyncio. Here ``wait`` runs them on
``trio.lowlevel.wait_readable`` / ``wait_writable`` on ``pgconn.socket``, the lock is a
``trio.Lock``, and ``connect`` drives psycopg's connect generator the same way (bounded
by ``connect_timeout``). A query then costs no thread hop: the calling task sends, parks
on the socket and reads the result.

Bounds: a statement is bounded by the server (``statement_timeout`` in the options) and
a dead peer by TCP keepalives / ``tcp_user_timeout`` given by the caller. A wait
cancelled by trio leaves the protocol in an unknown state: the connection is closed.
"""

from __future__ import annotations

import contextlib
import select
from typing import Any

import psycopg
import trio
from psycopg import pq
from psycopg.abc import PQGen, PQGenConn
from psycopg.conninfo import conninfo_to_dict, make_conninfo, timeout_from_conninfo
from psycopg.waiting import Ready, Wait

_R, _W = Ready.R, Ready.W


def tcp_bounds(bound_ms: int) -> dict[str, Any]:
    """libpq TCP settings that make a dead or partitioned server fail a wait within
    about ``bound_ms``: statement_timeout is enforced by the server only, so without
    them a wait lasts the kernel's ~15 min retransmission timeout. Keepalives cover an
    idle socket waiting for a result (first probe after half the bound, then 3 over the
    other half), tcp_user_timeout data sent and not acknowledged."""
    idle_s = max(1, bound_ms // 2000)
    count = 3
    interval_s = max(1, (bound_ms // 1000 - idle_s) // count)
    return dict(keepalives=1, keepalives_idle=idle_s, keepalives_interval=interval_s,
                keepalives_count=count, tcp_user_timeout=bound_ms)


def _ready_now(fileno: int, want: Wait) -> int:
    """What the socket is ready for right now (0: nothing); a zero-timeout poll."""
    poll = select.poll()
    poll.register(fileno, (select.POLLIN if want & Wait.R else 0)
                  | (select.POLLOUT if want & Wait.W else 0))
    events = poll.poll(0)
    if not events:
        return 0
    ev = events[0][1]
    # an error or hang-up is reported as readable: libpq reads it and says what failed
    return ((_R if ev & (select.POLLIN | select.POLLERR | select.POLLHUP) else 0)
            | (_W if ev & select.POLLOUT else 0))


async def _ready(fileno: int, want: Wait) -> int:
    if want & Wait.W and (now := _ready_now(fileno, want)):
        return now  # a socket asked for writing nearly always is: no scheduler round
    if want == Wait.R:
        await trio.lowlevel.wait_readable(fileno)
        return _R
    if want == Wait.W:
        await trio.lowlevel.wait_writable(fileno)
        return _W
    got = 0  # both: whichever comes first (libpq must read while it cannot write)
    async with trio.open_nursery() as nursery:
        async def one(wait: Any, ready: int) -> None:
            nonlocal got
            await wait(fileno)
            got |= ready
            nursery.cancel_scope.cancel()
        nursery.start_soon(one, trio.lowlevel.wait_readable, _R)
        nursery.start_soon(one, trio.lowlevel.wait_writable, _W)
    return got


class TrioConnection(psycopg.AsyncConnection[Any]):
    """``psycopg.AsyncConnection`` for trio. Use ``await TrioConnection.open(dsn, ...)``."""

    def __init__(self, pgconn: pq.abc.PGconn, *args: Any) -> None:
        super().__init__(pgconn, *args)
        self.lock = trio.Lock()  # type: ignore[assignment]  # same async-with interface

    @classmethod
    async def open(cls, dsn: str, *, autocommit: bool = True,
                   **kwargs: Any) -> TrioConnection:
        """Connect (``connect_timeout`` bounds it, as libpq's own does); libpq tries the
        DSN's hosts in turn."""
        conninfo = make_conninfo(dsn, **kwargs)
        timeout = timeout_from_conninfo(conninfo_to_dict(conninfo)) or None
        gen = cls._connect_gen(conninfo)
        try:
            with trio.fail_after(timeout) if timeout else contextlib.nullcontext():
                conn = await _drive_conn(gen)
        except trio.TooSlowError:
            raise psycopg.errors.ConnectionTimeout("connection timeout expired") from None
        conn._autocommit = autocommit
        return conn

    def close_now(self) -> None:
        """``close`` without a checkpoint (it has none to make): for finally blocks
        and synchronous callers."""
        self._closed = True
        self.pgconn.finish()

    async def one(self, query: Any, params: Any = None) -> Any:
        """The first row of ``query``'s result (None when it has none)."""
        return await (await self.execute(query, params)).fetchone()

    async def all(self, query: Any, params: Any = None) -> list[Any]:
        return await (await self.execute(query, params)).fetchall()

    async def wait(self, gen: PQGen[Any], interval: float = 0.0,
                   timeout: float | None = None) -> Any:
        fileno = self.pgconn.socket
        try:
            want = next(gen)
            while True:
                want = gen.send(await _ready(fileno, want))
        except StopIteration as ex:
            return ex.value
        except trio.Cancelled:
            # cancelled mid-protocol: what was sent may still run and the answer is
            # lost, so the connection cannot be used again
            self.pgconn.finish()
            raise


async def _drive_conn(gen: PQGenConn[Any]) -> Any:
    try:
        fileno, want = next(gen)
        while True:
            fileno, want = gen.send(await _ready(fileno, want))
    except StopIteration as ex:
        return ex.value
