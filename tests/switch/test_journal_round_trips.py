"""Round trips to PostgreSQL per journal call, counted at the protocol: libpq traces
every message of the store's connections, and each round trip ends with exactly one
ReadyForQuery from the server (after a Sync, or a simple Query such as BEGIN)."""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from typing import Any

import psycopg
import trio
import trio.testing
from switchkit import trio_test

from payswitch.codecs.iso8583 import Message
from payswitch.switch.journal import SafItem, Store

PAN = "4761739001010010"


class TracedStore(Store):
    """A Store whose pool connections are traced by libpq into one file."""

    def __init__(self, dsn: str, **kw: Any) -> None:
        super().__init__(dsn, **kw)
        fd, path = tempfile.mkstemp()
        os.unlink(path)
        self._trace = fd
        self._traced: list[psycopg.Connection] = []

    def _connect(self) -> psycopg.Connection:
        conn = super()._connect()
        if conn not in self._traced:
            conn.pgconn.trace(self._trace)
            self._traced.append(conn)
        return conn

    def round_trips(self) -> int:
        """Round trips since the last call (untracing flushes libpq's buffer)."""
        for conn in self._traced:
            if not conn.closed:
                conn.pgconn.untrace()
        # traced again: the hot path's connection is kept, not fetched from the pool
        self._traced = [c for c in self._traced if not c.closed]
        for conn in self._traced:
            conn.pgconn.trace(self._trace)
        fd = self._trace
        text = os.pread(fd, os.fstat(fd).st_size, 0).decode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        return sum(1 for line in text.splitlines()
                   if line.split("\t")[1:4:2] == ["B", "ReadyForQuery"])

    def close(self) -> None:  # the tests close the store last
        super().close()
        os.close(self._trace)


def _request(stan: str = "000001") -> Message:
    return Message(mti="0100", pan=PAN, processing_code="000000", amount_minor=1234,
                   currency="840", stan=stan, transmission_time="1128121314",
                   terminal_id="TERM0001")


def _rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


async def _store(dsn: str) -> TracedStore:
    store = TracedStore(dsn, pool_size=1)
    await store.migrate()
    store.round_trips()  # not the migration's
    return store


@trio_test
async def test_an_authorization_makes_one_round_trip_per_journal_call(dsn: str) -> None:
    store = await _store(dsn)
    req = _request()
    out = Message(**{**vars_of(req), "mti": "0100", "stan": "900001"})
    resp = Message(**{**vars_of(req), "mti": "0110", "response_code": "00",
                      "auth_code": "A1B2C3"})
    trips = []
    claim = await store.claim("k1", "TERM0001", req, "fp")
    trips.append(store.round_trips())
    await store.append("issuer_request", out, source="TERM0001", link="visa",
                       dup_key="k1", pan=("tok", b"blob"))
    trips.append(store.round_trips())
    wrote = await store.complete("k1", "TERM0001", resp,
                                 [("issuer_response", resp, "visa"),
                                  ("risk_scored", {"score": 7}, None)])
    trips.append(store.round_trips())
    store.close()
    assert claim.owner and wrote
    # was [4, 3, 4]: BEGIN and COMMIT around each; the first call on the hot path's
    # connection also prepares its statement there (once per connection)
    assert trips == [2, 1, 1]
    assert _rows(dsn, "select event, source, link, dup_key, mti, stan, amount_minor,"
                      " currency, pan_masked, response_code, pan_token, fields->>'score'"
                      " from switch_journal order by id") == [
        ("request", "TERM0001", None, "k1", "0100", "000001", 1234, "840",
         "476173******0010", None, None, None),
        ("issuer_request", "TERM0001", "visa", "k1", "0100", "900001", 1234, "840",
         "476173******0010", None, "tok", None),
        ("issuer_response", "TERM0001", "visa", "k1", "0110", "000001", 1234, "840",
         "476173******0010", "00", None, None),
        ("risk_scored", "TERM0001", None, "k1", None, None, None, None, None, None,
         None, "7"),
        ("response", "TERM0001", None, "k1", "0110", "000001", 1234, "840",
         "476173******0010", "00", None, None),
    ]
    assert _rows(dsn, "select response->>'response_code', completed_at is not null,"
                      " owner = (select owner from switch_journal limit 1)"
                      " from switch_dedup") == [("00", True, True)]


def vars_of(msg: Message) -> dict[str, Any]:
    return {k: v for k, v in ((f, getattr(msg, f)) for f in msg.__dataclass_fields__)
            if v is not None}


@trio_test
async def test_a_retried_complete_writes_nothing_in_one_round_trip(dsn: str) -> None:
    """Lost commit acknowledgement: the retry finds the answer recorded and writes no
    row twice (and a duplicate is then replayed the first answer)."""
    store = await _store(dsn)
    req = _request()
    resp = Message(mti="0110", response_code="00", stan="000001")
    await store.claim("k1", "TERM0001", req, "fp")
    assert await store.complete("k1", "TERM0001", resp)
    store.round_trips()
    assert not await store.complete("k1", "TERM0001",
                                    Message(mti="0110", response_code="96"))
    assert store.round_trips() == 1
    dup = await store.claim("k1", "TERM0001", req, "fp")
    store.close()
    assert not dup.owner and dup.response["response_code"] == "00"
    assert [r[0] for r in _rows(dsn, "select event from switch_journal order by id")] == [
        "request", "response", "duplicate"]


@trio_test
async def test_saf_items_commit_with_the_answer(dsn: str) -> None:
    """complete with a SAF item: the dedup row, the SAF row and the journal rows are
    written by one transaction (they share their xmin), the events in order."""
    store = await _store(dsn)
    await store.claim("k1", "TERM0001", _request(), "fp")
    resp = Message(mti="0110", response_code="91", stan="000001")
    item = SafItem(link="visa", mti="0420", message={"stan": "900001"})
    assert await store.complete("k1", "TERM0001", resp, [("issuer_timeout", {}, "visa")],
                                [item])
    store.close()
    events = _rows(dsn, "select event, xmin::text from switch_journal order by id")
    assert [e for e, _ in events] == ["request", "issuer_timeout", "saf_queued", "response"]
    xmins = {x for _, x in events[1:]}
    xmins |= {r[0] for r in _rows(dsn, "select xmin::text from switch_saf")}
    xmins |= {r[0] for r in _rows(dsn, "select xmin::text from switch_dedup")}
    assert len(xmins) == 1


def _lock_waits(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select count(*) from pg_stat_activity"
                            " where datname = current_database()"
                            " and wait_event_type = 'Lock'").fetchone()[0]


async def _batch(store: TracedStore, *calls: Any) -> list[Any]:
    """Run ``calls`` (coroutine functions) as one batch: queued behind a claim whose
    statement (the hot path's batch in flight) waits for a row another connection
    holds, and behind a call that holds the store's one writer thread (what goes that
    way: a duplicate's lookup). Their results, in order; the held claim's statement
    ends in the round trips counted."""
    release = threading.Event()
    out: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        out[i] = await calls[i]()

    with psycopg.connect(store._dsn) as locker:  # a transaction left open
        locker.execute("insert into switch_dedup (dup_key) values ('held')")
        async with trio.open_nursery() as n:
            started = threading.Event()
            n.start_soon(store.call, lambda conn: started.set() or release.wait(10))
            await trio.to_thread.run_sync(started.wait, 10)  # the one writer is held
            n.start_soon(store.claim, "held", "TERM0001", _request("999999"), "fp")
            with trio.fail_after(10):  # its statement is in the server, waiting
                while await trio.to_thread.run_sync(_lock_waits, store._dsn) == 0:
                    await trio.sleep(0.01)
            for i in range(len(calls)):
                n.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
            store.round_trips()  # not the earlier calls'
            locker.rollback()
            release.set()
    return out


@trio_test
async def test_a_batch_of_claims_is_one_statement(dsn: str) -> None:
    store = await _store(dsn)
    claims = [functools.partial(store.claim, f"k{i}", "TERM0001", _request(f"{i:06d}"), "fp")
              for i in range(10)]
    results = await _batch(store, *claims)
    trips = store.round_trips()
    store.close()
    assert all(r.owner for r in results)
    # the held claim's statement, then the ten claims' one (was 13: BEGIN, the ten
    # claims, COMMIT, a Parse)
    assert trips == 1 + 1
    assert _rows(dsn, "select count(*), count(distinct xmin::text) from switch_dedup"
                      " where dup_key <> 'held'") == [(10, 1)]
    assert _rows(dsn, "select dup_key, stan from switch_journal where dup_key <> 'held'"
                      " order by stan") == [(f"k{i}", f"{i:06d}") for i in range(10)]


@trio_test
async def test_a_mixed_batch_writes_only_what_each_call_won(dsn: str) -> None:
    """Claims, issuer_requests and completes in one statement: a new claim owns its
    key; a claim of a key that is there, or there twice in the batch, gets the
    original's state (its own statements, after); a complete already recorded writes
    nothing; each payment's rows in its calls' order."""
    store = await _store(dsn)
    req = _request()
    resp = Message(mti="0110", response_code="00", stan="000001")
    await store.claim("old", "TERM0001", req, "fp")
    await store.complete("old", "TERM0001", resp)
    await store.claim("open", "TERM0001", req, "fp")
    await store.claim("sent", "TERM0001", req, "fp")
    out = Message(mti="0100", stan="900001")
    results = await _batch(
        store,
        functools.partial(store.claim, "new", "TERM0001", req, "fp"),
        functools.partial(store.claim, "old", "TERM0001", req, "fp"),
        functools.partial(store.claim, "new", "TERM0001", req, "fp"),
        functools.partial(store.append, "issuer_request", out, source="TERM0001",
                          link="visa", dup_key="sent", pan=("tok", b"\x00\xff")),
        functools.partial(store.complete, "open", "TERM0001", resp,
                          [("risk_scored", {"score": 7}, None)]),
        functools.partial(store.complete, "old", "TERM0001",
                          Message(mti="0110", response_code="96")),
    )
    trips = store.round_trips()
    store.close()
    new, old, new_again, appended, completed, recompleted = results
    if new_again.owner:  # trio starts the batch's tasks in either order
        new, new_again = new_again, new
    assert new.owner and not old.owner and old.response["response_code"] == "00"
    assert not new_again.owner and new_again.response is None
    assert appended and completed and not recompleted
    # the held claim's statement; the batch's; the key claimed twice, its second
    # claim in the next statement; then each duplicate alone: BEGIN, its lookup, its
    # row, COMMIT; or both duplicates' lookups in one writer-thread batch when the
    # second is queued before the thread takes the first (it depends on when the
    # thread runs): one BEGIN / COMMIT around both
    assert trips in (1 + 1 + 1 + 4 + 4, 1 + 1 + 1 + 1 + 2 + 2 + 1)
    assert _rows(dsn, "select dup_key, event, pan_token, encode(pan_enc, 'hex')"
                      " from switch_journal where dup_key <> 'held'"
                      " order by dup_key, id") == [
        ("new", "request", None, None), ("new", "duplicate", None, None),
        ("old", "request", None, None), ("old", "response", None, None),
        ("old", "duplicate", None, None),
        ("open", "request", None, None), ("open", "risk_scored", None, None),
        ("open", "response", None, None),
        ("sent", "request", None, None), ("sent", "issuer_request", "tok", "00ff")]
    assert _rows(dsn, "select dup_key, response->>'response_code' from switch_dedup"
                      " where dup_key <> 'held' order by dup_key") == [
        ("new", None), ("old", "00"), ("open", "00"), ("sent", None)]
