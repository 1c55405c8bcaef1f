"""Group commit of the switch journal, against a real PostgreSQL.

Rows written by one transaction share their ``xmin``: counting distinct xmin values
counts the transactions that wrote them, as the database saw it."""

from __future__ import annotations

import threading

import psycopg
import trio
import trio.testing
from switchkit import trio_test

from payswitch.codecs.iso8583 import Message
from payswitch.switch import journal
from payswitch.switch.errors import StoreError
from payswitch.switch.journal import Store

CALLS = 60


def _request(i: int) -> Message:
    return Message(mti="0100", pan="4761739001010010", processing_code="000000",
                   amount_minor=100 + i, stan=f"{i:06d}", terminal_id="TERM0001")


def _transactions(dsn: str, table: str = "switch_dedup") -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"select count(distinct xmin::text) from {table}").fetchone()[0]


async def _held(store: Store, nursery: trio.Nursery) -> threading.Event:
    """Occupy the store's only writer until the returned event is set, so that the
    calls started next queue up behind it (one batch)."""
    release, started = threading.Event(), threading.Event()
    nursery.start_soon(store.call, lambda conn: started.set() or release.wait(10))
    await trio.to_thread.run_sync(started.wait, 10)  # running in the one writer thread
    return release


async def _claims(store: Store, n: int, results: dict[int, object]) -> None:
    async def one(i: int) -> None:
        try:
            results[i] = await store.claim(f"k{i}", "acq", _request(i), "fp")
        except StoreError as e:
            results[i] = e
    async with trio.open_nursery() as n_:
        for i in range(n):
            n_.start_soon(one, i)


@trio_test
async def test_concurrent_claims_share_few_transactions(dsn: str) -> None:
    store = Store(dsn, pool_size=1)
    await store.migrate()
    results: dict[int, object] = {}
    await _claims(store, CALLS, results)
    store.close()
    assert all(getattr(r, "owner", False) for r in results.values()), results
    # one slot: the first call alone, the others queued behind it in one or two batches
    assert _transactions(dsn) <= 3


@trio_test
async def test_calls_queued_behind_a_busy_slot_commit_together(dsn: str) -> None:
    store = Store(dsn, pool_size=1)
    await store.migrate()
    results: dict[int, object] = {}
    async with trio.open_nursery() as n:
        release = await _held(store, n)
        n.start_soon(_claims, store, CALLS, results)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    store.close()
    assert len(results) == CALLS and all(r.owner for r in results.values())
    assert _transactions(dsn) == 1


@trio_test
async def test_a_failing_call_does_not_fail_its_batch_neighbours(dsn: str) -> None:
    store = Store(dsn, pool_size=1)
    await store.migrate()

    def broken(conn: psycopg.Connection) -> None:
        conn.execute("select * from no_such_table")

    results: dict[int, object] = {}

    async def bad() -> None:
        try:
            await store.call(broken)
        except StoreError as e:
            results[-1] = e

    async with trio.open_nursery() as n:
        release = await _held(store, n)
        n.start_soon(_claims, store, 20, results)
        n.start_soon(bad)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    store.close()
    assert isinstance(results.pop(-1), StoreError)
    assert all(getattr(r, "owner", False) for r in results.values()), results
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from switch_dedup").fetchone()[0] == 20


@trio_test
async def test_a_failed_commit_fails_every_call_of_its_batch(dsn: str) -> None:
    """COMMIT itself fails (a deferred constraint): the outcome of a batch whose COMMIT
    did not answer is unknown, so every caller gets StoreError, as a lone transaction's
    caller would; none is quietly run again."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table gc_probe (k int, unique (k) deferrable initially deferred)")
    store = Store(dsn, pool_size=1)

    def insert(conn: psycopg.Connection, k: int) -> None:
        conn.execute("insert into gc_probe values (%s)", (k,))

    outcome: list[object] = []

    async def one(k: int) -> None:
        try:
            outcome.append(await store.call(insert, k))
        except StoreError as e:
            outcome.append(e)

    async with trio.open_nursery() as n:
        release = await _held(store, n)
        for k in (1, 1, 2, 3):  # queued behind it: one batch, 1 twice
            n.start_soon(one, k)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    store.close()
    assert len(outcome) == 4 and all(isinstance(o, StoreError) for o in outcome)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from gc_probe").fetchone()[0] == 0


@trio_test
async def test_a_cancelled_caller_still_waits_for_its_commit(dsn: str) -> None:
    """The wait for a group commit is not cancellable: a caller cancelled while its
    call is queued gets the call's outcome, never Cancelled with the row written."""
    store = Store(dsn, pool_size=1)
    await store.migrate()
    results: list[object] = []

    async def claim(scope: trio.CancelScope) -> None:
        with scope:
            results.append(await store.claim("k1", "acq", _request(1), "fp"))
            await trio.sleep(0)  # the first checkpoint after it: cancelled here
            results.append("not cancelled")

    scope = trio.CancelScope()
    async with trio.open_nursery() as n:
        release = await _held(store, n)
        n.start_soon(claim, scope)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert results == []  # still waiting for its batch
        release.set()
    store.close()
    assert [getattr(r, "owner", r) for r in results] == [True]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from switch_dedup").fetchone()[0] == 1


@trio_test
async def test_an_idle_writer_ends_and_the_next_call_starts_one(dsn: str, monkeypatch) -> None:
    monkeypatch.setattr(journal, "WRITER_IDLE_S", 0.01)
    store = Store(dsn, pool_size=1)
    await store.migrate()
    assert (await store.claim("k1", "acq", _request(1), "fp")).owner
    with trio.fail_after(10):
        while store._running:  # until its idle writer thread has ended
            await trio.sleep(0.01)
    assert not store._idle_writers  # else the next call would wake a thread that is gone
    assert (await store.claim("k2", "acq", _request(2), "fp")).owner
    store.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from switch_dedup").fetchone()[0] == 2


@trio_test
async def test_more_calls_queued_than_a_batch_takes_are_all_answered(dsn: str) -> None:
    """A freed slot wakes one queued caller, who writes the next batch (at most
    batch_max calls): the calls beyond it are still written, batch after batch, and
    nobody is left waiting."""
    store = Store(dsn, pool_size=2, batch_max=4)
    await store.migrate()
    results: dict[int, object] = {}
    async with trio.open_nursery() as n:
        release = await _held(store, n)
        n.start_soon(_claims, store, 22, results)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    store.close()
    assert len(results) == 22 and all(getattr(r, "owner", False) for r in results.values())
    assert 22 / 4 <= _transactions(dsn) <= 22  # no batch above batch_max


@trio_test
async def test_close_ends_the_idle_writer_thread(dsn: str) -> None:
    """A closed store's writer does not sit out its idle time holding the store (and,
    through it, connections a later GC would find unclosed)."""
    store = Store(dsn, pool_size=1)
    await store.migrate()
    others = set(threading.enumerate())  # earlier tests' stores may still idle
    assert await store.outcome("k1") is None  # a call through the writer thread
    writers = [t for t in threading.enumerate()
               if t.name == "payswitch-journal" and t not in others]
    assert len(writers) == 1 and store._running == 1
    store.close()
    for t in writers:  # well inside WRITER_IDLE_S: ended by close, not by idling
        t.join(timeout=journal.WRITER_IDLE_S / 4)
    assert not any(t.is_alive() for t in writers) and store._running == 0
    assert await store.outcome("k2") is None  # a new one starts
    store.close()


def _backends_waiting(dsn: str) -> list[int]:
    """Pids of this database's sessions waiting for a lock (a statement held up)."""
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "select pid from pg_stat_activity where datname = current_database()"
            " and wait_event_type = 'Lock'").fetchall()]


async def _until_waiting(dsn: str) -> list[int]:
    with trio.fail_after(10):
        while not (pids := await trio.to_thread.run_sync(_backends_waiting, dsn)):
            await trio.sleep(0.01)
    return pids


@trio_test
async def test_a_batch_whose_connection_dies_fails_every_call_and_the_next_reconnects(
        dsn: str) -> None:
    """The hot path's statement is sent from trio on a connection of its own: when that
    connection dies with a batch in flight, the batch's outcome is unknown, so each of
    its callers gets StoreError (none is told it owns a key it may not own); the calls
    after it are written on a new connection."""
    store = Store(dsn, pool_size=1)
    await store.migrate()
    results: dict[int, object] = {}
    with psycopg.connect(dsn) as locker:  # a transaction left open holds k0's row
        locker.execute("insert into switch_dedup (dup_key) values ('k0')")
        async with trio.open_nursery() as n:
            n.start_soon(_claims, store, 3, results)  # k0, k1, k2: one batch
            (pid,) = await _until_waiting(dsn)
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("select pg_terminate_backend(%s)", (pid,))
        locker.rollback()
    assert sorted(results) == [0, 1, 2]
    assert all(isinstance(r, StoreError) for r in results.values()), results
    assert (await store.claim("k9", "acq", _request(9), "fp")).owner
    store.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select dup_key from switch_dedup").fetchall() == [("k9",)]


@trio_test
async def test_a_statement_past_its_timeout_fails_its_batch(dsn: str) -> None:
    """The server's statement timeout bounds the hot path's wait as it bounds a thread's
    call: every call of the batch gets StoreError, nothing of it is written."""
    store = Store(dsn, pool_size=1, statement_timeout_ms=300)
    await store.migrate()
    results: dict[int, object] = {}
    with psycopg.connect(dsn) as locker:
        locker.execute("insert into switch_dedup (dup_key) values ('k0')")
        with trio.fail_after(10):
            await _claims(store, 3, results)
        locker.rollback()
    store.close()
    assert sorted(results) == [0, 1, 2]
    assert all(isinstance(r, StoreError) for r in results.values()), results
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from switch_dedup").fetchone()[0] == 0


@trio_test
async def test_a_bug_in_the_hot_path_fails_its_batch_and_the_next_batch_runs(
        dsn: str, monkeypatch) -> None:
    """A sender that fails for a reason of its own (not the database's) answers every
    call of its batch with StoreError and hands on: no caller is left waiting."""
    store = Store(dsn, pool_size=1)
    await store.migrate()
    real = journal._TrioBulk._statement
    calls = []

    async def broken_once(self, bulks):
        calls.append(len(bulks))
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return await real(self, bulks)

    monkeypatch.setattr(journal._TrioBulk, "_statement", broken_once)
    results: dict[int, object] = {}
    with trio.fail_after(10):
        await _claims(store, 3, results)
        assert (await store.claim("k9", "acq", _request(9), "fp")).owner
    store.close()
    assert calls[0] == 3 and all(isinstance(r, StoreError) for r in results.values())
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select dup_key from switch_dedup").fetchall() == [("k9",)]


@trio_test
async def test_a_cancelled_sender_still_waits_for_its_batch(dsn: str) -> None:
    """The first caller of a batch sends it and waits for the server's answer for every
    caller: cancelled while the statement runs (here: waiting on a row lock), it and its
    batch neighbours still get the outcome, never Cancelled with the rows written."""
    store = Store(dsn, pool_size=1)
    await store.migrate()
    results: dict[int, object] = {}
    after: list[str] = []

    async def claims(scope: trio.CancelScope) -> None:
        with scope:
            await _claims(store, 3, results)  # k0, k1, k2: one batch
            await trio.sleep(0)  # the first checkpoint after it: cancelled here
            after.append("not cancelled")

    scope = trio.CancelScope()
    with psycopg.connect(dsn) as locker:  # a transaction left open holds k0's row
        locker.execute("insert into switch_dedup (dup_key) values ('k0')")
        async with trio.open_nursery() as n:
            n.start_soon(claims, scope)
            await _until_waiting(dsn)  # the batch's statement waits on k0's row
            scope.cancel()
            await trio.sleep(0.2)
            assert results == {}  # still waiting for their batch
            locker.rollback()  # k0 is free: the batch commits
    store.close()
    assert after == []
    assert {i: getattr(r, "owner", r) for i, r in results.items()} == {
        0: True, 1: True, 2: True}
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from switch_dedup").fetchone()[0] == 3
