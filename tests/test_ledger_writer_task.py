"""The BatchWriter's writer task (the batch sent from trio, libpq non-blocking): who is
written when callers give up, that it ends with ``run()``, how batches form, timeouts,
and a connection lost mid-batch. The test holds the ledger's rows locked from a
connection of its own (``DbGate``), so a batch waits inside the database until the test
lets it go: "queued" and "being written" are states the test controls, not timing it
hopes for."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import psycopg
import trio
import trio.testing

from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.store import Ledger
from payswitch.ledger.types import Account, Event, LedgerError, Transfer
from payswitch.ledger.writer import BatchWriter, WriterConfig

USD = 840
BANK, SHOP = 1, 2
WAIT_S = 10  # every wait on the writer is bounded by this
MAC = hmac_sha256(b"writer-task-key-0123456789")


class DbGate:
    """The accounts and the chain head locked (FOR UPDATE) by a transaction of the
    test's own: a writer's batch touching them waits in the database until release()."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg.connect(dsn)
        self.conn.execute("select 1 from accounts for update")
        self.conn.execute("select 1 from event_chain_head for update")
        self.pid = self.conn.info.backend_pid

    def _waiting(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            row = c.execute("select count(*) from pg_stat_activity where datname = "
                            "current_database() and wait_event_type = 'Lock'").fetchone()
        return row[0] if row else 0

    async def entered(self) -> None:
        """Until a batch waits on the gate's locks."""
        with trio.fail_after(WAIT_S):
            while not await trio.to_thread.run_sync(self._waiting):
                await trio.sleep(0.01)

    def release(self) -> None:
        self.conn.commit()
        self.conn.close()


def _run_gated(dsn: str, writer: BatchWriter,
               body: Callable[[DbGate], Awaitable[None]]) -> None:
    """``body(gate)`` with the writer running and the gate's locks taken, all of it
    bounded by WAIT_S; then the writer is stopped."""
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            gate = DbGate(dsn)
            with trio.fail_after(WAIT_S):
                await body(gate)
            nursery.cancel_scope.cancel()

    trio.run(main)


def _setup(dsn: str) -> None:
    with Ledger(dsn, migrate=True) as led:
        assert set(led.create_accounts([Account(BANK, USD, 1), Account(SHOP, USD, 2)])) == {
            "created"}


def _t(i: int) -> Transfer:
    return Transfer(i, BANK, SHOP, 100, USD, 1)


def _stored(dsn: str, ids: list[int]) -> list[int]:
    with Ledger(dsn) as led:
        return sorted(t.id for t in led.lookup_transfers(ids))


def test_cancelled_before_taken_is_never_written_after_taken_it_is(pg_dsn):
    _setup(pg_dsn)
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(max_wait_ms=0))
    outcomes: dict[str, object] = {}

    async def caller(name: str, i: int, scope_box: list[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            scope_box.append(scope)
            outcomes[name] = await writer.create_transfers(
                [_t(i)], [Event(1000 + i, "held", {"i": i})])
            return
        outcomes[name] = "cancelled"

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            gate = DbGate(pg_dsn)
            first: list[trio.CancelScope] = []
            second: list[trio.CancelScope] = []
            nursery.start_soon(caller, "taken", 1, first)
            await gate.entered()  # the writer took the first request: it waits in there
            nursery.start_soon(caller, "queued", 2, second)
            await trio.testing.wait_all_tasks_blocked()
            assert writer.queue_depth() == 1
            first[0].cancel()  # its batch is being written: the outcome is the writer's
            second[0].cancel()  # still queued: out of the queue, never written
            await trio.testing.wait_all_tasks_blocked()
            assert writer.queue_depth() == 0
            gate.release()
            # the writer goes on: a later request is written and answered
            with trio.fail_after(WAIT_S):
                out = await writer.create_transfers([_t(3)])
            assert out.results == ("created",)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert outcomes == {"taken": "cancelled", "queued": "cancelled"}
    assert _stored(pg_dsn, [1, 2, 3]) == [1, 3]
    assert writer.batches == 2


def test_the_writer_ends_with_run_and_queued_callers_hear_it(pg_dsn):
    """run() cancelled while a batch waits in the database: that batch is finished and
    answered (its wait is bounded), the one queued behind it hears "stopped", no
    thread was ever started for it, and a stopped writer takes nothing."""
    _setup(pg_dsn)
    threads = set(threading.enumerate())
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(max_wait_ms=0))
    errors: list[str] = []
    done: list[int] = []

    async def caller(i: int) -> None:
        try:
            await writer.create_transfers([_t(i)], [Event(2000 + i, "held", {"i": i})])
            done.append(i)
        except LedgerError as e:
            errors.append(f"{i}: {e}")

    async def main() -> None:
        async with trio.open_nursery() as outer:
            gate = DbGate(pg_dsn)
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run)
                outer.start_soon(caller, 1)  # taken, then held in the database
                await gate.entered()
                outer.start_soon(caller, 2)  # queued behind it
                await trio.testing.wait_all_tasks_blocked()
                outer.start_soon(release, gate)  # once run() waits for its batch
                nursery.cancel_scope.cancel()  # run() ends ...
            # ... after the batch it was writing: that one committed and was answered
            await trio.testing.wait_all_tasks_blocked()
            assert errors == ["2: ledger writer stopped"] and done == [1]
        with trio.fail_after(WAIT_S):
            try:
                await writer.create_transfers([_t(3)])
            except LedgerError as e:
                assert "not running" in str(e)
            else:
                raise AssertionError("a stopped writer took a request")

    trio.run(main)
    assert _stored(pg_dsn, [1, 2, 3]) == [1]
    assert not any(t.name == "payswitch-ledger-writer"
                   for t in set(threading.enumerate()) - threads)


async def release(gate: DbGate) -> None:
    await trio.testing.wait_all_tasks_blocked()
    gate.release()


def test_a_batch_collects_until_full_or_max_wait(pg_dsn):
    """While a batch collects, the writer is woken by requests only when they fill it:
    with a max_wait far beyond the test's bound, a full batch is written at once (one
    transaction), also after a request cancelled while queued took its count back."""
    _setup(pg_dsn)
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(max_batch=4,
                                                              max_wait_ms=600_000))

    async def body(gate: DbGate) -> None:
        async with trio.open_nursery() as callers:
            # full at once: written, then held in the database
            callers.start_soon(writer.create_transfers, [_t(i) for i in range(40, 44)],
                               [Event(3000, "held", {})])
            await gate.entered()
            with trio.CancelScope() as gave_up:  # queued, cancelled: never written
                callers.start_soon(_cancel_when_blocked, gave_up)
                await writer.create_transfers([_t(44), _t(45), _t(46)])
            gate.release()
            while writer.batches < 1:
                await trio.sleep(0.001)
            callers.start_soon(writer.create_transfers, [_t(50)])  # collecting
            await trio.testing.wait_all_tasks_blocked()
            callers.start_soon(writer.create_transfers, [_t(51)])  # not a wake-up
            await trio.testing.wait_all_tasks_blocked()
            assert writer.batches == 1 and writer.queue_depth() == 2
            # these fill the batch: the writer is woken, long before max_wait
            callers.start_soon(writer.create_transfers, [_t(52), _t(53)])

    _run_gated(pg_dsn, writer, body)
    assert writer.batches == 2
    assert _stored(pg_dsn, list(range(40, 47)) + [50, 51, 52, 53]) == [
        40, 41, 42, 43, 50, 51, 52, 53]


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


def test_requests_that_come_while_a_batch_commits_go_in_the_next_one(pg_dsn):
    """Group commit from trio: an idle writer is woken by a request; the requests that
    come while its batch waits in the database are the next batch, one transaction."""
    _setup(pg_dsn)
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(max_wait_ms=0))

    async def body(gate: DbGate) -> None:
        async with trio.open_nursery() as callers:
            callers.start_soon(writer.create_transfers, [_t(70)],
                               [Event(7000, "held", {})])
            await gate.entered()
            for i in range(71, 75):
                callers.start_soon(writer.create_transfers, [_t(i)],
                                   [Event(7000 + i, "held", {})])
            await trio.testing.wait_all_tasks_blocked()
            assert writer.queue_depth() == 4
            gate.release()
        assert writer.batches == 2

    _run_gated(pg_dsn, writer, body)
    assert _stored(pg_dsn, list(range(70, 75))) == list(range(70, 75))


def test_callers_past_their_timeout_hear_it_whether_queued_or_being_written(pg_dsn):
    """submit's ``timeout_s``: a caller whose request is being written (held in the
    database) and one whose request is queued behind it both hear "timed out", long
    before the test lets the batch go; the queued one is never written, the one being
    written is (its outcome was the writer's, as when a caller's wait is cancelled)."""
    _setup(pg_dsn)
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(max_batch=1, max_wait_ms=0))
    errors: list[str] = []

    async def call(transfers: list[Transfer], events: list[Event]) -> None:
        try:
            await writer.create_transfers(transfers, events, timeout_s=0.2)
        except LedgerError as e:
            errors.append(str(e))

    async def body(gate: DbGate) -> None:
        async with trio.open_nursery() as callers:
            callers.start_soon(call, [_t(60)], [Event(6000, "held", {})])
            await gate.entered()
            callers.start_soon(call, [_t(61)], [])  # behind it: max_batch is 1
        assert errors == ["ledger write timed out"] * 2
        gate.release()
        assert (await writer.create_transfers([_t(62)], timeout_s=WAIT_S)).ok

    _run_gated(pg_dsn, writer, body)
    assert _stored(pg_dsn, [60, 61, 62]) == [60, 62]


def test_a_connection_lost_mid_batch_fails_that_batch_and_the_writer_goes_on(pg_dsn):
    """The writer's backend terminated while its batch waits in the database: the
    batch's callers hear a LedgerError (outcome unknown), the writer reconnects and
    the next request is written."""
    _setup(pg_dsn)
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(max_wait_ms=0,
                                                              reconnect_backoff_ms=10))
    errors: list[str] = []

    async def call() -> None:
        try:
            await writer.create_transfers([_t(80)], [Event(8000, "held", {})])
        except LedgerError as e:
            errors.append(str(e))

    def kill_waiting() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            c.execute("select pg_terminate_backend(pid) from pg_stat_activity where "
                      "datname = current_database() and wait_event_type = 'Lock'")

    async def body(gate: DbGate) -> None:
        async with trio.open_nursery() as callers:
            callers.start_soon(call)
            await gate.entered()
            await trio.to_thread.run_sync(kill_waiting)
        gate.release()
        assert len(errors) == 1 and "not committed" in errors[0]
        assert (await writer.create_transfers([_t(81)])).ok

    _run_gated(pg_dsn, writer, body)
    assert _stored(pg_dsn, [80, 81]) == [81]


def test_a_database_that_never_answers_fails_the_batch_in_twice_the_statement_timeout(
        pg_dsn):
    """The writer's backend stopped (SIGSTOP: a partitioned or hung server, which
    neither answers nor cancels by statement_timeout): the batch's caller hears "no
    answer in time" within twice the statement timeout, not never, even though the
    batch's wait is shielded from cancellation; the writer then reconnects and writes
    the next request."""
    import os
    import signal

    _setup(pg_dsn)
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(
        max_wait_ms=0, statement_timeout_ms=300, reconnect_backoff_ms=10))
    errors: list[str] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            assert writer._ledger is not None
            pid = writer._ledger.conn.info.backend_pid
            os.kill(pid, signal.SIGSTOP)
            try:
                start = trio.current_time()
                with trio.fail_after(WAIT_S):
                    try:
                        await writer.create_transfers([_t(90)], [Event(9000, "held", {})])
                    except LedgerError as e:
                        errors.append(str(e))
                elapsed = trio.current_time() - start
            finally:
                os.kill(pid, signal.SIGCONT)
            assert errors and "no answer in time" in errors[0], errors
            assert 0.6 <= elapsed < 3, elapsed
            with trio.fail_after(WAIT_S):
                assert (await writer.create_transfers([_t(91)])).ok
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert _stored(pg_dsn, [90, 91]) == [91]
