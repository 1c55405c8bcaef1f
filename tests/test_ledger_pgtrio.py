"""psycopg on trio (ledger/pgtrio.py): bounded connect and cancellation, against real
PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest
import trio
import trio.testing

from payswitch.ledger.pgtrio import TrioConnection


async def _silent_server(task_status: trio.TaskStatus[int]) -> None:
    async def say_nothing(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as n:
        task_status.started(listener.socket.getsockname()[1])
        await trio.serve_listeners(say_nothing, [listener], handler_nursery=n)


def test_connect_to_a_silent_server_fails_after_connect_timeout() -> None:
    async def main() -> None:
        async with trio.open_nursery() as n:
            port = await n.start(_silent_server)
            t0 = trio.current_time()
            with trio.fail_after(60), pytest.raises(psycopg.errors.ConnectionTimeout):
                await TrioConnection.open(f"host=127.0.0.1 port={port} user=x dbname=x",
                                          connect_timeout=2)
            assert 2 <= trio.current_time() - t0 < 3
            n.cancel_scope.cancel()
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_cancelled_query_closes_its_connection(pg_dsn) -> None:
    async def main() -> None:
        conn = await TrioConnection.open(pg_dsn)
        with trio.move_on_after(0.2):
            await conn.execute("select pg_sleep(30)")
        assert conn.closed  # its answer would be read by the next statement otherwise
        again = await TrioConnection.open(pg_dsn)
        assert await again.one("select 1") == (1,)
        again.close_now()
    trio.run(main)

