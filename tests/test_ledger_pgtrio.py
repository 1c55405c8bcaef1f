"""psycopg on trio (ledger/pgtrio.py) and the round trips of the batches that use it,
counted on the wire by a proxy (tests/pgturns.py), against real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest
import trio
import trio.testing
from pgturns import counting_proxy

from payswitch.codecs.iso8583 import Message
from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.pgtrio import TrioConnection
from payswitch.ledger.store import Ledger, Request
from payswitch.ledger.types import Account, Event, Transfer, TransferFlags
from payswitch.ledger.writer import BatchWriter, WriterConfig
from payswitch.switch.journal import Store

MAC = hmac_sha256(b"test-key-0123456789abcdef")
USD, BANK, ALICE = 840, 1, 2
HOLDS = 40


def _hold(i: int) -> Request:
    t = Transfer(1000 + i, ALICE, BANK, 1, USD, 1, TransferFlags.PENDING, 0, 60)
    return Request((t,), (Event(50_000 + i, "authorized", {"i": i}, payment_id=i + 1),))


def test_a_writer_batch_is_four_round_trips_whatever_its_size(pg_dsn):
    with Ledger(pg_dsn, migrate=True) as led:
        led.create_accounts([Account(BANK, USD, 1), Account(ALICE, USD, 2)])
    out: dict[str, int] = {}

    async def main() -> None:
        async with counting_proxy(pg_dsn) as (dsn, turns), trio.open_nursery() as n:
            writer = BatchWriter(dsn, mac=MAC, config=WriterConfig(max_wait_ms=200))
            await n.start(writer.run)
            before = turns[0].count
            async with trio.open_nursery() as callers:
                for i in range(HOLDS):
                    callers.start_soon(writer.submit, _hold(i))
            out["pipelined"], out["batches"] = turns[0].count - before, writer.batches

            def sync_batch() -> None:  # the same plan, one statement per round trip
                with Ledger(dsn, mac=MAC) as sync:
                    out["sync_before"] = turns[1].count
                    sync.submit([_hold(HOLDS + i) for i in range(HOLDS)])
                    out["sync"] = turns[1].count - out["sync_before"]
            await trio.to_thread.run_sync(sync_batch)
            n.cancel_scope.cancel()

    trio.run(main)
    assert out["batches"] >= 1
    assert out["pipelined"] <= 4 * out["batches"], out
    assert out["sync"] >= 10, out  # what the writer's thread used to make per batch


def test_a_journal_group_commit_is_one_round_trip_per_claim_plus_two(pg_dsn):
    n_claims = 20
    out: dict[str, int] = {}

    async def main() -> None:
        async with counting_proxy(pg_dsn) as (dsn, turns):
            store = Store(dsn, pool_size=1)
            await store.migrate()
            release = trio.Event()

            async def hold(conn: object) -> None:
                await release.wait()

            async def claim(i: int) -> None:
                await store.claim(f"k{i}", "acq", Message(
                    mti="0100", pan="4761739001010010", processing_code="000000",
                    amount_minor=100, stan=f"{i:06d}", terminal_id="TERM0001"), "fp")

            async with trio.open_nursery() as n:
                n.start_soon(store.call, hold)  # the only slot: the claims queue behind
                await trio.testing.wait_all_tasks_blocked()
                for i in range(n_claims):
                    n.start_soon(claim, i)
                await trio.testing.wait_all_tasks_blocked()
                before = turns[0].count
                release.set()
            out["turns"] = turns[0].count - before
            store.close()

    trio.run(main)
    # the held call's COMMIT, then one batch: a round trip per claim's INSERT ...
    # RETURNING (BEGIN and the previous claim's journal row ride with it), and the
    # last journal row with COMMIT. One round trip per statement made 2 * 20 + 3.
    assert out["turns"] <= n_claims + 2, out


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


def test_the_writer_connection_has_tcp_bounds(pg_dsn) -> None:
    """statement_timeout is the server's: against a dead or partitioned server only
    the client's TCP bounds end the writer's wait (it used to be the kernel's ~15 min)."""
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(statement_timeout_ms=4000))
    opts: dict[str, str] = {}

    async def main() -> None:
        async with trio.open_nursery() as n:
            await n.start(writer.run)
            assert writer._conn is not None
            opts.update({o.keyword.decode(): (o.val or b"").decode()
                         for o in writer._conn.pgconn.info})
            n.cancel_scope.cancel()
    trio.run(main)
    assert opts["keepalives"] == "1" and opts["tcp_user_timeout"] == "9000"
    idle, interval, count = (int(opts[k]) for k in
                             ("keepalives_idle", "keepalives_interval", "keepalives_count"))
    assert idle + interval * count <= 9 + 1
