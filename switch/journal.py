"""PostgreSQL store of the switch: append-only journal, duplicate index, SAF queue.

psycopg 3 is used synchronously in threads: ``writers`` long-lived writer threads for
the group commits, and for start-up and SAF-lease calls (``call_alone``, a transaction
of their own) ``trio.to_thread.run_sync`` under a ``CapacityLimiter`` of ``pool_size``.

Group commit: the hot-path calls (claim, issuer_request, complete, ...) of many
authorizations are run together: a writer thread takes every call queued so far (up to
``batch_max``), runs them and commits; each caller is answered only after that COMMIT,
the whole batch by one ``run_sync_soon`` into trio. While a batch is in flight the next
one fills up, so the batch size follows the load with no timer; a writer is woken only
when it is idle (a busy one takes the next batch itself), so a batch costs no thread
start and no wake-up under load. If a statement fails the batch is rolled back and its
calls are run again one at a time, so one bad call cannot fail its neighbours.

Round trips: the connections are in autocommit. The hot-path calls of a batch (claims,
issuer_request appends, completes without SAF items) are ONE statement together
(``_BULK``: data-modifying CTEs over one JSON array of their journal rows, its own
transaction), whatever their number; the batch's other calls then share a transaction
(BEGIN / COMMIT), or run alone without one. A call whose work takes several statements
opens its own transaction (``_atomic``), or shares its batch's.

The hot-path calls themselves skip the writer thread (``_TrioBulk``): their batch's
statement is sent and awaited from trio on a connection of its own (libpq in
non-blocking mode, its socket waited on by trio), by the first caller of the batch,
on behalf of all of them. No thread wakes up and none wakes trio for them: the hop
there and back cost more CPU than the statement's own client side. What the writer
thread did for them stays the same: one statement, its own transaction, each caller
answered after it; a batch the server refuses runs again call by call (through the
writer thread), and an outcome unknown (connection lost, no answer in time) is a
StoreError for every call of the batch.

Only safe fields are written: the PAN masked, never track 2, PIN block, CVV, EMV data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import orjson
import psycopg
import trio
from psycopg import generators, pq
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from payswitch.codecs.iso8583.message import Message
from payswitch.codecs.pan import mask_pan
from payswitch.ledger.pgtrio import drive
from payswitch.ledger.store import tcp_bounds
from payswitch.switch.errors import StoreError

# Canonical fields that may be written to a table. Everything else (PAN, track 2, PIN
# block, EMV, MAC, expiry, unnamed ``other`` fields) is left out.
SAFE_FIELDS = (
    "mti", "processing_code", "amount_minor", "settlement_amount_minor",
    "billing_amount_minor", "transmission_time", "stan", "local_time", "local_date",
    "settlement_date", "mcc", "acquirer_country", "pos_entry_mode", "card_sequence",
    "pos_condition", "acquirer_id", "forwarding_id", "rrn", "auth_code", "response_code",
    "terminal_id", "merchant_id", "merchant_name", "currency", "settlement_currency",
    "billing_currency", "additional_amounts", "network_code", "original_data",
)


def _one(cur: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row a statement always returns (an aggregate, a lock probe, RETURNING of the
    row just written or locked): none would be a broken invariant, not a None to read."""
    row = cur.fetchone()
    if row is None:
        raise StoreError("statement returned no row")
    return row


def _straight_safe_fields() -> Callable[[Message], dict[str, Any]]:
    """``safe_fields`` as straight-line code made from SAFE_FIELDS: one attribute read
    and test per field, in that order, no tuple, zip or comprehension (under half the
    dict comprehension's CPU on a 0110, about 30 % less on a 0100; it runs on four
    messages per authorization: request, outbound request, issuer answer, answer)."""
    lines = ["def safe_fields(msg):", "    out = {}"]
    for name in SAFE_FIELDS:
        lines += [f"    v = msg.{name}", "    if v is not None:", f"        out[{name!r}] = v"]
    lines += ["    if msg.pan:", "        out['pan_masked'] = mask_pan(msg.pan)", "    return out"]
    scope: dict[str, Any] = {"mask_pan": mask_pan, "__name__": __name__}
    exec("\n".join(lines), scope)  # noqa: S102 (the text is made of SAFE_FIELDS only)
    fn: Callable[[Message], dict[str, Any]] = scope["safe_fields"]
    fn.__doc__ = "A message's safe fields (SAFE_FIELDS not None) and its masked PAN."
    return fn


safe_fields = _straight_safe_fields()


def _fields(msg: Message | dict | None) -> dict[str, Any]:
    """What a journal row's ``fields`` holds: a message's safe fields, or a dict as is."""
    return safe_fields(msg) if isinstance(msg, Message) else dict(msg or {})


def _json(value: Any) -> bytes:
    """A ``_BULK`` array element as JSON, made by its caller: orjson (a twentieth of
    json.dumps' CPU for a journal row), or json.dumps when orjson refuses the value (a
    lone surrogate, a key that is not a string, an int past 64 bits), so that the
    server refuses that call alone, as it always did, and its neighbours are written."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value).encode()


def _as_is(data: bytes) -> bytes:
    return data


def message_from_safe(fields: dict[str, Any], mti: str | None = None) -> Message:
    kept = {k: v for k, v in fields.items() if k in SAFE_FIELDS}
    if mti is not None:
        kept["mti"] = mti
    return Message(**kept)


@dataclass(frozen=True, slots=True)
class Claim:
    owner: bool  # True: this request is new and the caller processes it
    response: dict[str, Any] | None = None  # the original's response when completed
    same: bool = True  # False: the key's first request had another fingerprint


CLAIMED = Claim(owner=True)  # a new request's claim (frozen: one for all of them)


def pan_aad(dup_key: str | None) -> bytes:
    """AES-GCM associated data of a stored PAN: the identity of the payment its row
    belongs to (its dup_key), so that a blob moved to another payment fails."""
    return b"payswitch-pan|" + (dup_key or "").encode()


@dataclass(frozen=True, slots=True)
class SafRow:
    id: int
    link: str
    mti: str
    dup_key: str | None
    message: dict[str, Any]
    attempts: int
    expires_at: datetime
    pan_token: str | None = None
    pan_enc: bytes | None = None


@dataclass(frozen=True, slots=True)
class Original:
    """What the switch sent to the issuer for a request, and what it answered."""
    link: str | None
    dup_key: str
    issuer_request: dict[str, Any] | None  # safe fields of the outbound request
    response: dict[str, Any] | None  # response sent to the terminal
    pan_token: str | None = None  # of the outbound request (see schema.sql)
    pan_enc: bytes | None = None
    request: dict[str, Any] | None = None  # safe fields of the request as received


@dataclass(frozen=True, slots=True)
class SafItem:
    link: str
    mti: str
    message: dict[str, Any]  # safe fields; mti set at send time (repeat on retries)
    pan_token: str | None = None  # HSM token of the PAN (see schema.sql)
    pan_enc: bytes | None = None  # the PAN, AES-GCM under the DEK, aad = pan_aad(dup_key)


# Advisory lock keys (two int4 form): (OWNER_LOCK_CLASS, hashtext(boot id)) is held by
# each live process for its lifetime; RECOVERY_LOCK serializes recoveries, MIGRATE_LOCK
# the schema migrations of processes starting together.
OWNER_LOCK_CLASS = 0x70737721  # "psw!"
RECOVERY_LOCK = (OWNER_LOCK_CLASS + 1, 0)  # a class of its own: no boot id hashes here
MIGRATE_LOCK = (OWNER_LOCK_CLASS + 1, 1)


@dataclass(eq=False, slots=True)
class _Bulk:
    """A hot-path call's share of its batch's one statement (``Store._BULK``), and,
    while it waits in ``_TrioBulk``, what became of it (one object per call)."""
    gate: str  # "c" claim, "d" complete: its rows written only if it won; "a" append
    key: str
    # journal rows, JSON (``Store._json_row``); a claim's one row carries its dedup
    # row's fingerprint ("p"), a complete's last row (its response) the answer ("a")
    rows: list[bytes]
    duplicate: Any = None  # claim: fn(conn) when the key is there already
    task: Any = None  # the caller's trio task, parked in _TrioBulk
    result: Any = None
    error: BaseException | None = None
    alone: bool = False  # the batch's statement was refused: run again on its own
    lost: bool = False  # a claim whose key was there already
    lead: bool = False  # woken to send the next batch


@dataclass(eq=False)
class _Call:
    """One queued ``fn(conn, *args)`` of a group commit, and its outcome."""
    fn: Any
    args: tuple[Any, ...]
    bulk: _Bulk | None = None  # set: may run in the batch's one statement instead
    result: Any = None
    error: BaseException | None = None
    task: Any = None  # the caller's trio task, parked until the batch commits
    token: Any = None  # its run's TrioToken


WRITERS = 1  # default writer threads (group commits in flight at once)
WRITER_IDLE_S = 10.0  # a writer thread idle this long ends (a new one starts on demand)


class _Writer:
    """A writer thread's wake-up: a lock held while it sleeps, released to wake it."""
    __slots__ = ("wake",)

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()


def _not_cancellable(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


_BULK_STATEMENT = b"payswitch_journal_bulk"


class _TrioBulk:
    """The group commit of the hot-path calls, from trio: the first caller to find no
    batch in flight sends one (every call queued, up to ``batch_max``) on a connection
    of its own and waits for its socket in trio; the calls queued meanwhile go in the
    next one, sent by the first of them. Each caller is answered after the statement's
    COMMIT (autocommit: the statement is its transaction). The wait is not cancellable,
    as for the writer thread's calls, and is bounded: past twice the statement timeout
    (the server's own bound, with TCP keepalives on the connection) the connection is
    dropped and the batch's outcome is unknown (StoreError).

    No cancel scope around the whole send (two scopes a batch cost more CPU than the
    batch's own Python): each wait of the sender is not cancellable by itself (its
    scheduler round: ``cancel_shielded_checkpoint``; a connect: shielded; the answer:
    one scope, shielded and with the deadline, entered only when the answer is not in
    already)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queued: list[_Bulk] = []
        self.leading = False  # a batch is in flight (or being handed on)
        self.conn: psycopg.Connection | None = None  # read and written under store._lock
        self.owner = store.owner.encode()
        self.deadline_s = (2 * store._statement_timeout_ms / 1000
                           + store._connect_timeout_s)

    async def submit(self, me: _Bulk) -> None:
        me.task = trio.lowlevel.current_task()
        self.queued.append(me)
        if self.leading:  # not cancellable (Abort.FAILED), as a thread call
            await trio.lowlevel.wait_task_rescheduled(_not_cancellable)
            if not me.lead:
                return
        self._lead(True)
        batch: list[_Bulk] = []
        try:
            # one scheduler round first: the calls made in it join this batch (never
            # cancelled: every caller waits for the outcome; so are the waits of _send)
            await trio.lowlevel.cancel_shielded_checkpoint()
            batch = self._take()  # the queue's first call, ``me``, is in it
            await self._send(batch)
        finally:  # whatever happened, nobody is left waiting
            for p in batch:
                if p.result is None and p.error is None and not (p.alone or p.lost):
                    p.error = StoreError("journal writer failed")
                if p is not me:
                    trio.lowlevel.reschedule(p.task)
            if self.queued:  # the next batch is sent by its first caller
                self.queued[0].lead = True
                trio.lowlevel.reschedule(self.queued[0].task)
            else:
                self._lead(False)

    def _lead(self, leading: bool) -> None:
        with self.store._lock:  # close() from any thread reads it
            self.leading = leading

    def _take(self) -> list[_Bulk]:
        """The next batch: the queue's first ``batch_max`` calls, a key at most once
        per gate (its second call, a duplicate's claim, stays for the next batch)."""
        batch: list[_Bulk] = []
        seen: set[tuple[str, str]] = set()
        rest: list[_Bulk] = []
        for p in self.queued:
            ident = (p.gate, p.key)
            if len(batch) < self.store._batch_max and ident not in seen:
                seen.add(ident)
                batch.append(p)
            else:
                rest.append(p)
        self.queued = rest
        return batch

    async def _send(self, batch: list[_Bulk]) -> None:
        store = self.store
        try:
            lost = await self._statement(batch)
        except Exception as e:  # StoreError; any other is a bug: fail, never hang
            why = str(e) if isinstance(e, StoreError) else (
                f"journal writer failed: {type(e).__name__}")
            for p in batch:
                p.error = StoreError(why)
            return
        if lost is None:  # refused, nothing written
            for p in batch:
                p.alone = True
            return
        if not lost:  # every call won (the usual batch)
            for p in batch:
                p.result = CLAIMED if p.gate == "c" else True
            return
        for p in batch:
            if p.gate == "c" and ("c", p.key) in lost:
                p.lost = True
            else:
                p.result = store._outcome(p, lost)

    async def _statement(self, calls: list[_Bulk]) -> set[tuple[str, str]] | None:
        """Run ``Store._BULK`` for ``calls``: the (gate, key) that lost, None when the
        server refused it (nothing written); StoreError when the outcome is unknown."""
        store = self.store
        conn = await self._connection()
        pg = conn.pgconn
        results = None
        try:  # the rows are JSON already (the callers'): one array of them
            pg.send_query_prepared(_BULK_STATEMENT, [
                b"[" + b",".join([row for b in calls for row in b.rows]) + b"]",
                self.owner, self.owner])
            gen = generators.execute(pg)
            try:  # the answer is often in already (the server ran while we sent)
                wait = next(gen)
            except StopIteration as done:
                results = done.value
            else:  # a wait: bounded, and not cancellable (its callers wait for it)
                deadline = trio.current_time() + self.deadline_s
                with trio.CancelScope(shield=True, deadline=deadline):
                    results = await drive(gen, pg.socket, wait)
        except psycopg.Error as e:
            lost = pg.status != pq.ConnStatus.OK
            self._drop(conn)
            if lost:  # as in Store._run: the idle connections are dead too
                store.close()
            raise StoreError(f"database error {type(e).__name__}") from None
        if results is None:
            self._drop(conn)
            raise StoreError("database error: no answer in time")
        res = results[-1]
        if res.status == pq.ExecStatus.TUPLES_OK:
            return {(res.get_value(i, 0).decode(), res.get_value(i, 1).decode())
                    for i in range(res.ntuples)}
        state = res.error_field(pq.DiagnosticField.SQLSTATE) or b""
        try:
            error = psycopg.errors.lookup(state.decode())
        except KeyError:  # no SQLSTATE (the connection failed) or one psycopg does not know
            error = psycopg.OperationalError if not state else psycopg.DatabaseError
        if pg.status == pq.ConnStatus.OK and not issubclass(error, psycopg.OperationalError):
            return None  # refused: nothing written, each call runs again on its own
        self._drop(conn)  # as in Store._run_bulk: the outcome is unknown
        raise StoreError(f"database error {error.__name__}")

    async def _connection(self) -> psycopg.Connection:
        with self.store._lock:
            conn = self.conn
        if conn is not None and not conn.closed:
            return conn
        with trio.CancelScope(shield=True):  # not cancellable: see the class
            try:
                new = await trio.to_thread.run_sync(self._connect)
            except psycopg.Error as e:
                raise StoreError(f"database connect failed: {type(e).__name__}") from None
        with self.store._lock:
            self.conn = new
        return new

    def _connect(self) -> psycopg.Connection:
        """A pool connection (kept until dropped), the statement prepared on it."""
        conn = self.store._connect()
        query = Store._BULK
        for n in range(1, 4):  # psycopg's placeholders as libpq's
            query = query.replace("%s", f"${n}", 1)
        res = conn.pgconn.prepare(_BULK_STATEMENT, query.encode())
        if res.status != pq.ExecStatus.COMMAND_OK:
            conn.close()
            raise psycopg.OperationalError("preparing the journal statement failed")
        return conn

    def _drop(self, conn: psycopg.Connection) -> None:
        with self.store._lock:
            if self.conn is conn:
                self.conn = None
        conn.close()

    def close(self) -> None:
        """Close the connection unless a batch is in flight on it (its sender closes it
        when the store is closing; any thread may call this)."""
        with self.store._lock:
            conn, self.conn = (self.conn, None) if not self.leading else (None, self.conn)
        if conn is not None:
            conn.close()


class Store:
    def __init__(self, dsn: str, pool_size: int = 4, connect_timeout_s: int = 5,
                 statement_timeout_ms: int = 5000, batch_max: int = 256,
                 writers: int | None = None) -> None:
        writers = min(pool_size, WRITERS) if writers is None else writers
        assert pool_size > 0 and batch_max > 0 and 0 < writers <= pool_size
        self._dsn = dsn
        self._batch_max = batch_max
        # Group commits in flight at once: writer threads, each on one connection.
        # While they commit, the next batch fills; fewer make bigger batches.
        self._writers = writers
        self._lock = threading.Lock()  # guards the four below (trio and writer threads)
        self._queued: list[_Call] = []
        self._idle_writers: list[_Writer] = []
        self._closing = False  # close() was called and no call came since
        self._running = 0
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_ms = statement_timeout_ms
        self._idle: queue.SimpleQueue[psycopg.Connection] = queue.SimpleQueue()
        self.limiter = trio.CapacityLimiter(pool_size)
        # this process's boot id: written on every row, locked while we live
        self.owner = uuid.uuid4().hex
        self._owner_conn: psycopg.Connection | None = None
        self._bulk = _TrioBulk(self)

    # -- plumbing ---------------------------------------------------------------------
    def connect_kwargs(self) -> dict[str, Any]:
        """libpq settings of every connection: the statement timeout, enforced by the
        server, and the client-side TCP bounds of ``tcp_bounds`` (a partitioned or dead
        database fails a call within about that time instead of holding a pool slot and
        the shutdown for the kernel's ~15 min; DESIGN: every wait bounded)."""
        return dict(
            autocommit=True, connect_timeout=self._connect_timeout_s,
            options=f"-c statement_timeout={self._statement_timeout_ms}",
            **tcp_bounds(self._statement_timeout_ms),
        )

    def _connect(self) -> psycopg.Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return psycopg.connect(self._dsn, **self.connect_kwargs())

    def _run(self, fn: Any, *args: Any, begin: bool = True) -> Any:
        """``fn(conn, *args)`` on a pool connection: in a transaction of its own, or
        (``begin`` False) in autocommit, ``fn`` opening one if it needs it."""
        try:
            conn = self._connect()
        except psycopg.Error as e:
            raise StoreError(f"database connect failed: {type(e).__name__}") from None
        try:
            with conn.transaction() if begin else contextlib.nullcontext():
                result = fn(conn, *args)
        except psycopg.Error as e:
            lost = conn.broken  # the connection, not the statement, failed
            conn.close()
            if lost:  # the server went away: the idle ones are dead too, drop them now
                self.close()  # rather than fail one request each when it is back
            raise StoreError(f"database error {type(e).__name__} "
                             f"(sqlstate {getattr(e, 'sqlstate', None)})") from None
        except BaseException:
            conn.close()
            raise
        self._idle.put(conn)
        return result

    async def call_alone(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in a transaction of its own on a pool thread."""
        return await trio.to_thread.run_sync(self._run, fn, *args, limiter=self.limiter)

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in the next group commit; return after its COMMIT.

        ``fn`` must have no effect outside the database (it may run twice: once in a
        batch that is rolled back, once alone), and when it runs several statements
        that must commit together, run them under ``self._atomic(conn)``. Like a
        thread call, the wait is not cancellable: a caller cancelled meanwhile learns
        the outcome first."""
        return await self._submit(_Call(fn, args))

    async def _settle(self, bulk: _Bulk) -> Any:
        """A hot-path call's outcome when its batch left it without a result. The call
        is in its batch's one statement, sent from trio (``await self._bulk.submit(b)``,
        made by the callers themselves: one coroutine frame less to make, suspend and
        resume, three times per authorization; ``b.result`` is its outcome when set);
        then, here: its error raised, or the call run on its own through the writer
        thread when that statement was refused (alone, or in the thread's next bulk
        statement, then alone), or a lost claim's original state read."""
        if bulk.error is not None:
            raise bulk.error
        if bulk.alone:  # refused with its batch: nothing was written
            return await self._submit(_Call(self._write_alone, (bulk,), bulk))
        if bulk.lost:  # a claim whose key was there already: the original's state
            return await self.call(bulk.duplicate)
        return bulk.result

    async def _submit(self, call: _Call) -> Any:
        call.task = trio.lowlevel.current_task()
        call.token = trio.lowlevel.current_trio_token()
        start = False
        with self._lock:
            self._closing = False
            self._queued.append(call)
            if self._idle_writers:
                self._idle_writers.pop().wake.release()
            elif self._running < self._writers:
                self._running += 1
                start = True
        if start:
            threading.Thread(target=self._write_loop, name="payswitch-journal",
                             daemon=True).start()
        # not cancellable (Abort.FAILED): the caller waits for its COMMIT's outcome
        await trio.lowlevel.wait_task_rescheduled(_not_cancellable)
        if call.error is not None:
            raise call.error
        return call.result

    def _write_loop(self) -> None:
        """A writer thread: run the queued calls batch after batch; sleep when there
        are none (woken by ``_submit``), end after WRITER_IDLE_S of that."""
        me = _Writer()
        while True:
            with self._lock:
                batch = self._queued[:self._batch_max]
                del self._queued[:self._batch_max]
                if not batch:
                    if self._closing:  # close() was called, no call since: end
                        self._running -= 1
                        return
                    self._idle_writers.append(me)
            if batch:
                self._run_answered(batch)
            elif not me.wake.acquire(timeout=WRITER_IDLE_S):
                with self._lock:
                    if me in self._idle_writers:  # not woken meanwhile: end
                        self._idle_writers.remove(me)
                        self._running -= 1
                        return
                me.wake.acquire()  # woken just as the wait timed out

    def _run_answered(self, batch: list[_Call]) -> None:
        try:
            self._run_batch(batch)
        except Exception as e:  # a bug, not the database's error: fail, never hang
            self._fail(batch, f"journal writer failed: {type(e).__name__}")
        finally:
            for token in {c.token for c in batch}:
                with contextlib.suppress(trio.RunFinishedError):  # no one left to tell
                    token.run_sync_soon(self._answer, [c for c in batch if c.token is token])

    @staticmethod
    def _answer(calls: list[_Call]) -> None:
        for c in calls:
            trio.lowlevel.reschedule(c.task)

    def _run_batch(self, batch: list[_Call]) -> None:
        bulk: list[_Call] = []
        rest: list[_Call] = []
        keys = set()
        for c in batch:  # a key twice (a duplicate's claim): the second on its own path
            if c.bulk is not None and (c.bulk.gate, c.bulk.key) not in keys:
                keys.add((c.bulk.gate, c.bulk.key))
                bulk.append(c)
            else:
                rest.append(c)
        if len(bulk) > 1:
            failed = self._run_bulk(bulk)
            if failed is not None:  # outcome unknown or server gone: as for a COMMIT
                return self._fail(batch, failed)
            batch = rest + [c for c in bulk if c.error is None and c.result is None]
        if len(batch) > 1:
            try:
                conn = self._connect()
            except psycopg.Error as e:
                return self._fail(batch, f"database connect failed: {type(e).__name__}")
            ran = False
            try:
                with conn.transaction():
                    results = [c.fn(conn, *c.args) for c in batch]
                    ran = True
            except Exception as e:
                lost = conn.broken
                conn.close()
                if lost:  # as in _run: the idle connections are dead too
                    self.close()
                if ran or lost or isinstance(e, psycopg.OperationalError):
                    # COMMIT failed (outcome unknown) or the server is gone: the same
                    # answer as a lone transaction would have had, for every call
                    return self._fail(batch, f"database error {type(e).__name__}")
            else:
                self._idle.put(conn)
                for c, r in zip(batch, results, strict=True):
                    c.result = r
                return
        # alone, or rolled back by one call's error: each call on its own, in autocommit
        # (one statement is its own transaction: no BEGIN / COMMIT round trips)
        for c in batch:
            try:
                c.result = self._run(c.fn, *c.args, begin=False)
            except Exception as e:  # delivered to its caller
                c.error = e

    def _run_bulk(self, calls: list[_Call]) -> str | None:
        """Several hot-path calls in one statement, its own transaction. Sets the
        results; a claim whose key was there already, or every call when the statement
        was refused, is left (result None) to run on its own path. Returns why, when
        the outcome is unknown (the connection or the server failed)."""
        try:
            conn = self._connect()
        except psycopg.Error as e:
            return f"database connect failed: {type(e).__name__}"
        try:
            losers = self._write_bulk(conn, [c.bulk for c in calls if c.bulk is not None])
        except psycopg.Error as e:
            lost = conn.broken
            conn.close()
            if lost:  # as in _run: the idle connections are dead too
                self.close()
            if lost or isinstance(e, psycopg.OperationalError):
                return f"database error {type(e).__name__}"
            return None  # refused, nothing written: each runs again on its own
        self._idle.put(conn)
        for c in calls:
            assert c.bulk is not None
            if c.bulk.gate == "c" and ("c", c.bulk.key) in losers:
                c.fn, c.args = c.bulk.duplicate, ()  # a duplicate: the original's state
            else:
                c.result = self._outcome(c.bulk, losers)
        return None

    def _write_alone(self, conn: psycopg.Connection, bulk: _Bulk) -> Any:
        lost = self._write_bulk(conn, [bulk])
        if bulk.gate == "c" and ("c", bulk.key) in lost:
            return bulk.duplicate(conn)
        return self._outcome(bulk, lost)

    @staticmethod
    def _outcome(bulk: _Bulk, lost: set[tuple[str, str]]) -> Any:
        if bulk.gate == "c":
            return CLAIMED
        return bulk.gate == "a" or ("d", bulk.key) not in lost

    def _write_bulk(self, conn: psycopg.Connection, calls: list[_Bulk],
                    ) -> set[tuple[str, str]]:
        """Run ``_BULK`` for ``calls``; the (gate, key) of the claims and completes that
        lost (wrote neither their dedup row / answer nor their journal rows)."""
        # the rows are JSON already (the callers'): one array of them
        rows = Jsonb(b"[" + b",".join([row for b in calls for row in b.rows]) + b"]",
                     dumps=_as_is)
        cur = conn.execute(self._BULK, (rows, self.owner, self.owner))
        return {(gate, key) for gate, key in cur.fetchall()}

    @staticmethod
    def _atomic(conn: psycopg.Connection) -> contextlib.AbstractContextManager[Any]:
        """The transaction of a call that takes several statements: its own when it
        runs alone (autocommit), none when it runs inside its batch's."""
        if conn.info.transaction_status == TransactionStatus.IDLE:
            return conn.transaction()
        return contextlib.nullcontext()

    @staticmethod
    def _fail(batch: list[_Call], why: str) -> None:
        for c in batch:
            c.error = StoreError(why)

    def close(self) -> None:
        """Close the idle connections and end the idle writer threads (a call after
        this starts a new one): nothing of a closed store lingers for a GC to find."""
        with self._lock:
            idle, self._idle_writers = self._idle_writers, []
            self._closing = True  # every writer ends when it next runs dry
        for w in idle:
            w.wake.release()
        self._bulk.close()
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    # -- owner liveness ---------------------------------------------------------------
    def _lock_owner(self) -> None:
        if self._owner_conn is not None and not self._owner_conn.closed:
            self._owner_conn.close()
        conn = psycopg.connect(self._dsn, **self.connect_kwargs())
        conn.execute("select pg_advisory_lock(%s, hashtext(%s))",
                     (OWNER_LOCK_CLASS, self.owner))
        self._owner_conn = conn

    async def hold_owner_lock(self) -> None:
        """Take this process's owner lock on a connection of its own (not the pool's):
        while it is held, no other process recovers our open requests."""
        try:
            await trio.to_thread.run_sync(self._lock_owner)
        except psycopg.Error as e:
            raise StoreError(f"owner lock failed: {type(e).__name__}") from None

    async def owner_lock_alive(self) -> bool:
        """Probe the owner lock's connection; if it was lost (database restart), take
        the lock again on a new one. False when that failed (retried next time)."""
        def probe() -> bool:
            try:
                assert self._owner_conn is not None
                self._owner_conn.execute("select 1")
                return True
            except (psycopg.Error, AssertionError):
                try:
                    self._lock_owner()
                except psycopg.Error:
                    return False
                return True
        return await trio.to_thread.run_sync(probe)

    def release_owner(self) -> None:
        conn, self._owner_conn = self._owner_conn, None
        if conn is None:
            return
        # Unlock before closing: the server drops a closed session's locks only once its
        # backend has noticed, so a successor's recovery could still find us alive.
        with contextlib.suppress(psycopg.Error):
            conn.execute("select pg_advisory_unlock_all()")
        conn.close()

    # -- schema -----------------------------------------------------------------------
    async def migrate(self) -> None:
        sql = resources.files("payswitch.switch").joinpath("schema.sql").read_text()

        def run(conn: psycopg.Connection) -> None:
            # `create ... if not exists` run by two workers at once can both pass the
            # check and one then fails on the catalog: one migration at a time
            conn.execute("select pg_advisory_xact_lock(%s, %s)", MIGRATE_LOCK)
            conn.execute(sql)
        await self.call_alone(run)

    # -- journal ----------------------------------------------------------------------
    _COLUMNS = (
        "event, source, link, dup_key, mti, stan, rrn, transmission_time, amount_minor,"
        " currency, processing_code, pan_masked, terminal_id, response_code, fields,"
        " pan_token, pan_enc, owner")
    _INSERT = ("insert into switch_journal (" + _COLUMNS + ")"  # noqa: S608 (no input)
               " values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)")
    # complete with SAF items: the answer on the dedup row, once (a retry finds it)
    _COMPLETE = ("update switch_dedup set response = %s, completed_at = now()"
                 " where dup_key = %s and completed_at is null returning dup_key")
    # The hot-path calls of a batch, as one JSON array of their journal rows (one
    # parameter, its elements serialized by their callers: psycopg sends the bytes as
    # they are, at a fraction of the cost of the scalar parameters of each row). A
    # claim's row (gate "c") carries its fingerprint ("p"), a complete's response row
    # its answer (marked "a": the row's fields are the answer): claims insert their
    # dedup rows (won: the new ones), completes record their answer once (done: those
    # not recorded yet; a retry after a lost COMMIT ack finds it), and each journal
    # row is written if its call won (gate "a": always), in the order given
    # (ordinality: the ids follow it). Returns (gate, key) of the claims and completes
    # that lost (rare: a duplicate, a retried answer), so that a batch whose calls all
    # won, the usual one, comes back as no rows to read.
    _BULK = (
        "with j as (select r, n from jsonb_array_elements(%s::jsonb)"  # noqa: S608
        " with ordinality as j(r, n)),"
        " won as (insert into switch_dedup"
        " (dup_key, fingerprint, owner) select r->>'k', r->>'p', %s from j"
        " where r->>'w' = 'c' order by 1 on conflict (dup_key) do nothing"
        " returning dup_key),"
        " a as (select r->>'k' as k, r->'f' as f from j where r ? 'a'),"
        " done as (insert into switch_dedup as s (dup_key, response, completed_at)"
        " select k, f, now() from a"
        " where exists (select from switch_dedup where dup_key = a.k) order by 1"
        " on conflict (dup_key) do update set response = excluded.response,"
        " completed_at = excluded.completed_at where s.completed_at is null"
        " returning s.dup_key),"
        " journalled as (insert into switch_journal (" + _COLUMNS + ")"
        " select r->>'e', r->>'s', r->>'l', r->>'k', f->>'mti', f->>'stan', f->>'rrn',"
        " f->>'transmission_time', (f->>'amount_minor')::bigint, f->>'currency',"
        " f->>'processing_code', f->>'pan_masked', f->>'terminal_id', f->>'response_code',"
        " f, r->>'t', decode(r->>'b', 'hex'), %s"
        " from j, lateral (select r->'f') as x(f)"
        " where case r->>'w' when 'c' then r->>'k' in (select dup_key from won)"
        " when 'd' then r->>'k' in (select dup_key from done) else true end"
        " order by n)"
        " select 'c', r->>'k' from j where r->>'w' = 'c'"
        " and r->>'k' not in (select dup_key from won)"
        " union all"
        " select 'd', k from a where k not in (select dup_key from done)")

    @staticmethod
    def _json_row(gate: str, event: str, msg: Message | dict | None, *,
                  dup_key: str, source: str | None = None, link: str | None = None,
                  pan: tuple[str, bytes] | None = None, **marks: Any) -> bytes:
        """A ``_BULK`` journal row: its columns are read from ``fields`` by the server
        (a key left out is a null column); ``marks``: a claim's fingerprint for its
        dedup row (``p``), a response's mark that its fields are the answer (``a``)."""
        row = {"w": gate, "e": event, "s": source, "l": link, "k": dup_key,
               "f": _fields(msg), **marks}
        if pan is not None:
            row["t"], row["b"] = pan[0], pan[1].hex()
        return _json(row)

    def _row(self, event: str, msg: Message | dict | None, *, source: str | None = None,
             link: str | None = None, dup_key: str | None = None,
             pan: tuple[str, bytes] | None = None) -> tuple[Any, ...]:
        f = _fields(msg)
        token, blob = pan or (None, None)
        return (event, source, link, dup_key, f.get("mti"), f.get("stan"), f.get("rrn"),
                f.get("transmission_time"), f.get("amount_minor"), f.get("currency"),
                f.get("processing_code"), f.get("pan_masked"), f.get("terminal_id"),
                f.get("response_code"), Jsonb(f), token, blob, self.owner)

    def _append(self, conn: psycopg.Connection, event: str, msg: Message | dict | None,
                **kw: Any) -> None:
        conn.execute(self._INSERT, self._row(event, msg, **kw))

    async def append(self, event: str, msg: Message | dict | None, *,
                     source: str | None = None, link: str | None = None,
                     dup_key: str | None = None, pan: tuple[str, bytes] | None = None,
                     reversal_of: str | None = None) -> bool:
        """Journal one row. With ``reversal_of`` (the original's dup_key), only if this
        request (``dup_key``) is the original's one reversal, claimed in the same
        transaction; returns False, having written nothing, when another one has it."""
        if reversal_of is None and dup_key is not None:  # the hot path
            bulk = _Bulk("a", dup_key, [self._json_row("a", event, msg, dup_key=dup_key,
                                                       source=source, link=link, pan=pan)])
            await self._bulk.submit(bulk)  # its outcome: b.result, else _settle
            return bool(bulk.result if bulk.result is not None else await self._settle(bulk))

        def run(conn: psycopg.Connection) -> bool:
            if reversal_of is not None:
                with self._atomic(conn):
                    if not self._claim_reversal(conn, reversal_of, dup_key):
                        return False
                    self._append(conn, event, msg, source=source, link=link,
                                 dup_key=dup_key, pan=pan)
                    return True
            self._append(conn, event, msg, source=source, link=link, dup_key=dup_key,
                         pan=pan)
            return True
        return await self.call(run)

    @staticmethod
    def _claim_reversal(conn: psycopg.Connection, original: str, reversal: str | None,
                        ) -> bool:
        """switch_reversal: whether ``reversal`` is (now, or already) the one reversal
        of ``original``."""
        conn.execute("insert into switch_reversal (original_dup_key, reversal_dup_key)"
                     " values (%s, %s) on conflict (original_dup_key) do nothing",
                     (original, reversal))
        (owner,) = _one(conn.execute("select reversal_dup_key from switch_reversal"
                                     " where original_dup_key = %s", (original,)))
        return owner == reversal

    async def claim(self, dup_key: str, source: str, request: Message,
                    fingerprint: str | None = None) -> Claim:
        """Own a new request (journalled), or learn the original's state. A request
        whose key matches but whose ``fingerprint`` differs from the original's (another
        card, processing code or currency) is journalled as ``duplicate_mismatch`` and
        gets ``same=False`` and no response (a row without a fingerprint, written
        before the column existed, matches any)."""
        def duplicate(conn: psycopg.Connection) -> Claim:
            with self._atomic(conn):  # the key is there (rare): the original's state
                response, stored = _one(conn.execute(
                    "select response, fingerprint from switch_dedup where dup_key = %s",
                    (dup_key,)))
                if stored is not None and stored != fingerprint:
                    self._append(conn, "duplicate_mismatch", request, source=source,
                                 dup_key=dup_key)
                    return Claim(owner=False, same=False)
                self._append(conn, "duplicate", request, source=source, dup_key=dup_key)
                return Claim(owner=False, response=response)
        row = self._json_row("c", "request", request, source=source, dup_key=dup_key,
                             p=fingerprint)
        bulk = _Bulk("c", dup_key, [row], duplicate)
        await self._bulk.submit(bulk)  # its outcome: b.result, else _settle
        claim: Claim = bulk.result if bulk.result is not None else await self._settle(bulk)
        return claim

    async def outcome(self, dup_key: str) -> dict[str, Any] | None:
        def run(conn: psycopg.Connection) -> dict[str, Any] | None:
            row = conn.execute("select response from switch_dedup where dup_key = %s",
                               (dup_key,)).fetchone()
            return row[0] if row else None
        return await self.call(run)

    async def complete(self, dup_key: str, source: str, response: Message,
                       events: Sequence[tuple[str, Message, str | None]] = (),
                       saf: Sequence[SafItem] = (), saf_expiry_s: int = 86_400,
                       reversal_of: str | None = None) -> bool:
        """Record the answer (and what led to it, and SAF items) in one transaction.

        Idempotent: when the answer is already recorded (a retry after a commit whose
        acknowledgement was lost) nothing is written again, so no reversal is queued
        twice. Returns whether this call wrote it. With ``reversal_of`` (a reversal's
        original), the SAF items are queued only if this request is, or becomes, the
        original's one reversal (switch_reversal).
        """
        fields = safe_fields(response)
        if not saf:  # the hot path
            rows = [self._json_row("d", event, msg, source=source, link=link, dup_key=dup_key)
                    for event, msg, link in events]
            rows.append(self._json_row("d", "response", fields, source=source,
                                       dup_key=dup_key, a=1))  # the answer recorded
            bulk = _Bulk("d", dup_key, rows)
            await self._bulk.submit(bulk)  # its outcome: b.result, else _settle
            return bool(bulk.result if bulk.result is not None else await self._settle(bulk))
        answer = Jsonb(fields)

        def run(conn: psycopg.Connection) -> bool:
            with self._atomic(conn):
                if conn.execute(self._COMPLETE, (answer, dup_key)).fetchone() is None:
                    return False
                queue = saf
                if reversal_of is not None and not self._claim_reversal(
                        conn, reversal_of, dup_key):
                    queue = ()  # already reversed by another request: nothing to queue
                # the path's events, SAF items, the response, in this order
                for event, msg, link in events:
                    self._append(conn, event, msg, source=source, link=link,
                                 dup_key=dup_key)
                for item in queue:
                    self._enqueue(conn, item, dup_key, saf_expiry_s)
                self._append(conn, "response", response, source=source, dup_key=dup_key)
                return True
        return await self.call(run)

    async def correct(self, dup_key: str, told: Message, saf: Sequence[SafItem] = (),
                      saf_expiry_s: int = 86_400) -> bool:
        """The sender was told ``told`` although another answer is recorded (its COMMIT
        succeeded but the acknowledgement was lost): record what it was told (so that a
        duplicate is told the same) and queue ``saf`` (the reversal of an approval it
        never saw), in one transaction. Idempotent: False when nothing differs."""
        def run(conn: psycopg.Connection) -> bool:
            with self._atomic(conn):
                row = conn.execute("select response from switch_dedup where dup_key = %s"
                                   " for update", (dup_key,)).fetchone()
                stored = row[0] if row else None
                if stored is not None and stored.get("response_code") == told.response_code:
                    return False
                conn.execute("update switch_dedup set response = %s, completed_at = now()"
                             " where dup_key = %s", (Jsonb(safe_fields(told)), dup_key))
                self._append(conn, "response_corrected", told, dup_key=dup_key)
                for item in saf:
                    self._enqueue(conn, item, dup_key, saf_expiry_s)
                return True
        return await self.call(run)

    # -- store and forward ------------------------------------------------------------
    def _enqueue(self, conn: psycopg.Connection, item: SafItem, dup_key: str | None,
                 expiry_s: int) -> None:
        conn.execute(
            "insert into switch_saf (link, mti, dup_key, message, expires_at, pan_token,"
            " pan_enc, owner) values (%s, %s, %s, %s, now() + %s, %s, %s, %s)",
            (item.link, item.mti, dup_key, Jsonb(item.message), timedelta(seconds=expiry_s),
             item.pan_token, item.pan_enc, self.owner),
        )
        self._append(conn, "saf_queued", {**item.message, "mti": item.mti}, link=item.link,
                     dup_key=dup_key)

    async def saf_due(self, links: list[str], limit: int, lease_ms: int) -> list[SafRow]:
        """Pending rows that are due, leased for ``lease_ms``: a row being sent is not
        picked again (by this or another sender) until its attempt has been recorded."""
        def run(conn: psycopg.Connection) -> list[SafRow]:
            rows = conn.execute(
                "update switch_saf set next_attempt_at = now() + %s where id in ("
                " select id from switch_saf where state = 'pending'"
                " and next_attempt_at <= now() and link = any(%s)"
                " order by id limit %s for update skip locked)"
                " returning id, link, mti, dup_key, message, attempts, expires_at, pan_token,"
                " pan_enc",
                (timedelta(milliseconds=lease_ms), links, limit),
            ).fetchall()
            return sorted((SafRow(*r) for r in rows), key=lambda r: r.id)
        return await self.call_alone(run)

    async def saf_acked(self, row: SafRow, response: Message) -> None:
        def run(conn: psycopg.Connection) -> None:
            with self._atomic(conn):
                conn.execute("update switch_saf set state = 'acked', attempts = attempts + 1,"
                             " last_result = %s where id = %s",
                             (response.response_code, row.id))
                self._append(conn, "saf_acked", response, link=row.link, dup_key=row.dup_key)
        await self.call(run)

    async def saf_failed(self, row: SafRow, reason: str, retry_in_ms: int,
                         max_attempts: int, counted: bool = True) -> bool:
        """Record a failed attempt (``counted``: False when nothing was sent, e.g. the
        link was busy or down); returns True when the row is given up (expired)."""
        def run(conn: psycopg.Connection) -> bool:
            n = 1 if counted else 0
            with self._atomic(conn):
                (state,) = _one(conn.execute(
                    "update switch_saf set attempts = attempts + %s, last_result = %s,"
                    " next_attempt_at = now() + %s,"
                    " state = case when attempts + %s >= %s or expires_at <= now()"
                    "   then 'expired' else 'pending' end"
                    " where id = %s returning state",
                    (n, reason, timedelta(milliseconds=retry_in_ms), n, max_attempts, row.id),
                ))
                if state == "expired":
                    self._append(conn, "saf_expired", {**row.message, "mti": row.mti},
                                 link=row.link, dup_key=row.dup_key)
                return state == "expired"
        return await self.call(run)

    async def saf_expire(self, limit: int) -> list[SafRow]:
        """Give up pending rows past their expires_at, whatever their link's state (a
        link that stays down must not keep them pending for ever); journalled."""
        def run(conn: psycopg.Connection) -> list[SafRow]:
            rows = conn.execute(
                "update switch_saf set state = 'expired', last_result = 'expired' where id in ("
                " select id from switch_saf where state = 'pending' and expires_at <= now()"
                " order by id limit %s for update skip locked)"
                " returning id, link, mti, dup_key, message, attempts, expires_at",
                (limit,),
            ).fetchall()
            out = sorted((SafRow(*r) for r in rows), key=lambda r: r.id)
            for row in out:
                self._append(conn, "saf_expired", {**row.message, "mti": row.mti},
                             link=row.link, dup_key=row.dup_key)
            return out
        return await self.call_alone(run)

    async def history(self, dup_key: str) -> list[dict[str, Any]]:
        """Every journal row of one payment, in order (see replay.payment_state)."""
        def run(conn: psycopg.Connection) -> list[dict[str, Any]]:
            cur = conn.execute("select * from switch_journal where dup_key = %s order by id",
                               (dup_key,))
            names = [c.name for c in cur.description or ()]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        return await self.call(run)

    # -- originals and recovery -------------------------------------------------------
    async def find_original(self, source: str, stan: str, transmission_time: str,
                            mtis: tuple[str, ...]) -> Original | None:
        def run(conn: psycopg.Connection) -> Original | None:
            row = conn.execute(
                "select dup_key from switch_journal where event = 'request'"
                " and source = %s and stan = %s and transmission_time = %s"
                " and mti = any(%s) order by id desc limit 1",
                (source, stan, transmission_time, list(mtis)),
            ).fetchone()
            if row is None:
                return None
            with self._atomic(conn):
                return self._original(conn, row[0])
        return await self.call(run)

    @staticmethod
    def _original(conn: psycopg.Connection, dup_key: str) -> Original:
        out = conn.execute(
            "select link, fields, pan_token, pan_enc from switch_journal where dup_key = %s"
            " and event = 'issuer_request' order by id desc limit 1", (dup_key,),
        ).fetchone()
        (response,) = _one(conn.execute(
            "select response from switch_dedup where dup_key = %s", (dup_key,)))
        req = conn.execute(
            "select fields from switch_journal where dup_key = %s and event = 'request'"
            " order by id limit 1", (dup_key,)).fetchone()
        return Original(link=out[0] if out else None, dup_key=dup_key,
                        issuer_request=out[1] if out else None, response=response,
                        pan_token=out[2] if out else None,
                        pan_enc=bytes(out[3]) if out and out[3] is not None else None,
                        request=req[0] if req else None)

    async def ledger_voids_due(self) -> list[str]:
        """Payments whose hold the switch owes a void and that is still pending (the
        ``ledger_expected_voids`` view: reversed originals, answers 96 with the ledger
        outcome unknown, requests recovered after a crash). Voided again at start, by
        the original's key, so that a crash between deciding and voiding loses none;
        a hold voided already is not listed. Needs the ledger's tables."""
        def run(conn: psycopg.Connection) -> list[str]:
            return [r[0] for r in conn.execute(
                "select distinct v.dup_key from ledger_expected_voids v"
                " join pending_transfers p on p.id = v.transfer_id"
                " where p.state = 'pending'")]
        return await self.call_alone(run)

    async def risk_inputs(self, feed: Any, hours: int = 24) -> int:
        """Stream the ``AuthInput`` of every ``risk_scored`` row of the last ``hours``,
        oldest first, to ``feed`` (an iterable consumer, e.g. ``RiskEngine.replay``):
        the risk state is rebuilt from them at start. A server-side cursor keeps memory
        flat however many rows a day holds."""
        def run(conn: psycopg.Connection) -> int:
            with conn.cursor(name="risk_replay") as cur:
                cur.itersize = 2000
                cur.execute("select fields->'input' from switch_journal where event ="
                            " 'risk_scored' and at >= now() - make_interval(hours => %s)"
                            " order by id", (hours,))
                return feed(row[0] for row in cur if row[0] is not None)
        return await self.call_alone(run)

    async def recover(self, reversal_of: Any, expiry_s: int,
                      keys_out: list[str] | None = None, min_age_s: int = 0) -> int:
        """After a crash: requests with no recorded answer have an unknown outcome.

        Each gets answer 91 recorded (a duplicate of it is told 91), and when it had
        been sent to an issuer, a 0420 reversal advice is queued. Returns the count;
        ``keys_out`` receives their duplicate keys (the ledger voids their holds).

        Only requests whose owner is gone (its owner lock free, or no owner recorded):
        another worker's, or a draining predecessor's, are still being answered. One
        recovery at a time (RECOVERY_LOCK, held to the COMMIT). ``min_age_s``: only
        requests claimed at least that long ago (the periodic sweep's margin against an
        owner that lost its lock's connection for a moment).
        """
        def run(conn: psycopg.Connection) -> int:
            conn.execute("select pg_advisory_xact_lock(%s, %s)", RECOVERY_LOCK)
            age = timedelta(seconds=min_age_s)
            owners = [r[0] for r in conn.execute(
                "select distinct owner from switch_dedup where completed_at is null"
                " and created_at <= now() - %s", (age,))]
            # a free lock is taken until COMMIT, so the owner cannot be seen twice
            gone = [o for o in owners if o is not None and _one(conn.execute(
                "select pg_try_advisory_xact_lock(%s, hashtext(%s))",
                (OWNER_LOCK_CLASS, o)))[0]]
            keys = [r[0] for r in conn.execute(
                "select dup_key from switch_dedup where completed_at is null"
                " and created_at <= now() - %s"
                " and (owner is null or owner = any(%s)) for update", (age, gone)
            ).fetchall()]
            for key in keys:
                orig = self._original(conn, key)
                if orig.issuer_request is not None:
                    item = reversal_of(message_from_safe(orig.issuer_request), orig.link)
                    if orig.pan_enc is not None:  # so that the 0420 carries DE2
                        item = dataclasses.replace(item, pan_token=orig.pan_token,
                                                   pan_enc=orig.pan_enc)
                    self._enqueue(conn, item, key, expiry_s)
                response = {"response_code": "91", "recovered": True}
                self._append(conn, "recovered", response, dup_key=key)
                conn.execute("update switch_dedup set response = %s, completed_at = now()"
                             " where dup_key = %s", (Jsonb(response), key))
            if keys_out is not None:
                keys_out.extend(keys)
            return len(keys)
        return await self.call_alone(run)

