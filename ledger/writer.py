"""The batched writer: many trio tasks submit, one writer task writes, each caller gets
its own outcome only after COMMIT.

Back of the envelope: a COMMIT with synchronous_commit on costs one WAL flush (~1-5 ms on
this class of machine), a batch adds 1-2 round trips (store.py) and ~15 µs of Python per
transfer plus the event MAC. One transaction per transfer would top out near 1/flush = a
few hundred per second; one per batch of 1,000 gives ~1,000/(5 ms + 1 ms + 15 ms) ≈ 50k/s
of ledger work before Python's own overhead. While a batch commits, the next one fills,
so batches grow with load without any waiting at low load.

The writer is a trio task (started by ``run``): it sends a batch's query strings
(``Ledger.steps``) on its connection with libpq in non-blocking mode and waits for the
socket in trio, as the journal's hot path does. Before, a writer thread did this: every
batch then cost the trio thread a GIL handoff per round trip, per HSM call and per
wake-up, a thread that polled its queue every millisecond, and a ``run_sync_soon`` back
to trio; the batch's own Python is the same on either thread. Every wait on the
database is bounded (twice the statement timeout, then the connection is dropped and
the batch's outcome is unknown).

Bounds: at most ``queue_max`` requests queued or being written (callers wait for room), a
batch holds at most ``max_batch`` transfers, and the writer waits at most ``max_wait_ms``
after a batch's first request arrived for more to join it. A caller who gives up (is
cancelled) before the writer took its request takes it out of the queue: never written.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import trio
from psycopg import generators, pq

from . import events as ev
from .pgtrio import drive
from .store import Ledger, Outcome, Request
from .types import BATCH_MAX, Event, LedgerError, Transfer, TransferFlags

# Records carry an event name as the message and their values in ``extra={"fields":
# ...}``: the switch's JSON log handler (on the "payswitch" logger) prints them as one
# JSON object per line, like its own.
log = logging.getLogger("payswitch.ledger.writer")
RECONNECT_LOG_EVERY = 25  # while the database is down: one line per this many tries
WATCH_S = 0.05  # callers' timeouts (submit's timeout_s) are checked this often


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


@dataclass
class WriterConfig:
    max_batch: int = 2000  # transfers per transaction
    max_wait_ms: float = 1.0  # after the first request, wait this long for more
    queue_max: int = 20_000  # requests waiting for the writer
    reconnect_backoff_ms: float = 200.0
    statement_timeout_ms: int = 10_000
    expiry_interval_s: float = 1.0


class _Slot:
    """One caller's request, queued or in a batch being written, and how it ended. A
    plain class (a dataclass with factories cost a microsecond more per request)."""

    __slots__ = ("request", "done", "outcome", "error", "checked", "queued_at", "deadline",
                 "expired", "taken")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.done = trio.Event()
        self.outcome: Outcome | None = None
        self.error: LedgerError | None = None
        self.checked: dict[int, str] = {}  # id(event) -> canonical payload
        self.queued_at = 0.0  # trio time when queued
        # trio time: the caller hears "timed out" then (run() checks)
        self.deadline = math.inf
        self.expired = False
        # in a batch being written, so the outcome is the writer's now; a caller who
        # gives up before takes it out of the queue
        self.taken = False


class BatchWriter:
    """Owns one database connection, used by its one writer task.

    Callers (trio tasks) queue requests; the writer task takes every request queued so
    far (up to ``max_batch`` transfers), writes them in one transaction from trio
    (``Ledger.steps``, libpq non-blocking) and answers the whole batch, then takes the
    next one: while a batch commits the next one fills.

    Usage (inside a trio nursery)::

        writer = BatchWriter(dsn, mac=hsm_mac)
        nursery.start_soon(writer.run)          # or: await nursery.start(writer.run)
        outcome = await writer.hold(...)
    """

    def __init__(self, dsn: str, *, mac: ev.MacFunction | None = None,
                 config: WriterConfig | None = None, schema: str | None = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.dsn = dsn
        self.mac = mac
        self.config = config or WriterConfig()
        self.schema = schema
        self.clock_ns = clock_ns
        # requests queued or being written: callers wait for room past queue_max
        self._room = trio.Semaphore(self.config.queue_max)
        self._queued: collections.deque[_Slot] = collections.deque()
        self._queued_transfers = 0  # theirs
        # the writer task's wake-up while it waits: set by a request when it waits for
        # any (``_want`` 0), or when the batch it collects is full (``_want`` transfers)
        self._wake: trio.Event | None = None
        self._want = 0
        self._stopped = False  # run() ended: submit refuses
        self._ledger: Ledger | None = None  # the writer task's, once connected
        self._batch: list[_Slot] = []  # being written
        # callers waiting with a deadline, and whether run() checks them
        self._timed: set[_Slot] = set()
        self._watching = False
        self.batches = 0
        self.transfers = 0

    def queue_depth(self) -> int:
        """Requests queued, not yet taken by the writer (the metrics scrape's gauge)."""
        return len(self._queued)

    # -- the writer task -------------------------------------------------------------------

    async def run(self, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connects (retrying while the database is down), then writes batch after
        batch; when cancelled, finishes the batch it is sending (bounded) and fails
        whatever is still queued."""
        try:
            self._ledger = await self._connect()
            task_status.started()
            self._watching = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch)
                while True:
                    batch = self._batch = await self._take()
                    await self._write(batch)
                    self._batch = []
                    self._answer(batch)
        finally:
            self._watching = False
            self._stopped = True
            # nobody waits forever: the batch cut short by the stop and whatever is
            # still queued fail (unknown -> retry later)
            stopped = LedgerError("ledger writer stopped")
            left, self._batch = [*self._batch, *self._queued], []
            self._queued.clear()
            self._queued_transfers = 0
            for slot in left:
                if slot.outcome is None and slot.error is None:
                    slot.error = stopped
                slot.done.set()
                self._room.release()
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    async def _watch(self) -> None:
        while True:  # one timer for every caller's timeout, not a cancel scope each
            await trio.sleep(WATCH_S)
            self._expire(trio.current_time())

    async def _connect(self) -> Ledger:
        failures = 0
        while True:
            try:
                ledger = await trio.to_thread.run_sync(self._new_ledger)
            except LedgerError as e:
                self._log_failure(e, failures)
                failures += 1
                await trio.sleep(self.config.reconnect_backoff_ms / 1000)
                continue
            if failures:
                log.warning("ledger_writer_reconnected", extra={"fields": {
                    "failures": failures}})
            return ledger

    def _new_ledger(self) -> Ledger:
        return Ledger(self.dsn, mac=self.mac, schema=self.schema, clock_ns=self.clock_ns,
                      statement_timeout_ms=self.config.statement_timeout_ms)

    @staticmethod
    def _log_failure(e: BaseException, failures: int) -> None:
        # the first failure, then one line per RECONNECT_LOG_EVERY tries
        if failures % RECONNECT_LOG_EVERY == 0:
            log.warning("ledger_writer_reconnecting", extra={"fields": {
                "error": _first_line(e), "failures": failures + 1}})

    async def _take(self) -> list[_Slot]:
        """The next batch: every request queued so far, up to max_batch transfers,
        waiting for requests when there are none and, after the first, at most
        max_wait_ms from its arrival for more (unless the batch is full)."""
        cfg = self.config
        batch: list[_Slot] = []
        await trio.lowlevel.checkpoint_if_cancelled()  # run() ends: queued ones fail
        while not batch:  # the ones waited for may have given up meanwhile
            while not self._queued:
                self._wake, self._want = trio.Event(), 0
                await self._wake.wait()
            left = self._queued[0].queued_at + cfg.max_wait_ms / 1000 - trio.current_time()
            if left > 0 and self._queued_transfers < cfg.max_batch:
                self._wake, self._want = trio.Event(), cfg.max_batch
                with trio.move_on_after(left):
                    await self._wake.wait()
            self._wake = None
            n = 0
            while self._queued and n < cfg.max_batch:
                slot = self._queued.popleft()
                slot.taken = True
                batch.append(slot)
                k = len(slot.request.transfers)
                n += k
                self._queued_transfers -= k
        return batch

    async def _write(self, batch: list[_Slot]) -> None:
        """One batch, one transaction; reconnects first if the connection was lost
        (retrying until run() ends: the callers time out meanwhile)."""
        ledger = self._ledger
        failures = 0
        while ledger is None or ledger.conn.closed or ledger.conn.broken:
            if ledger is not None:
                ledger.close()
                self._ledger = ledger = None
            try:
                self._ledger = ledger = await trio.to_thread.run_sync(self._new_ledger)
            except LedgerError as e:
                self._log_failure(e, failures)
                failures += 1
                await trio.sleep(self.config.reconnect_backoff_ms / 1000)
        if failures:
            log.warning("ledger_writer_reconnected", extra={"fields": {"failures": failures}})
        checked: dict[int, str] = {}
        for s in batch:
            checked.update(s.checked)
        try:  # each exchange shielded: once sent, its outcome is heard (bounded)
            outcomes = await self._submit(ledger, [s.request for s in batch], checked)
        except Exception as e:  # noqa: BLE001 - every caller must hear about it
            err = e if isinstance(e, LedgerError) else LedgerError(
                f"ledger batch failed: {type(e).__name__}: {e}")
            if not isinstance(e, LedgerError):
                log.error("ledger_writer_batch_bug", exc_info=e)
            for s in batch:
                s.error = err
            return
        self.batches += 1
        for s, o in zip(batch, outcomes, strict=True):
            self.transfers += len(s.request.transfers)
            s.outcome = o

    async def _submit(self, ledger: Ledger, requests: list[Request],
                      checked: dict[int, str]) -> list[Outcome]:
        """``ledger.steps`` run from trio: each query string sent, its answer awaited on
        the socket. A batch that raises ends its transaction with a rollback."""
        steps = ledger.steps(requests, checked)
        try:
            query = next(steps)
            while True:
                query = steps.send(await self._exchange(ledger, query))
        except StopIteration as done:
            outcomes: list[Outcome] = done.value
            return outcomes
        except BaseException as e:
            steps.close()
            if ledger.rollback_needed():
                with contextlib.suppress(LedgerError):  # dropped: as good as rolled back
                    await self._exchange(ledger, b"rollback")
            if isinstance(e, psycopg.Error):
                raise LedgerError(
                    f"ledger batch not committed: {type(e).__name__}: {e}") from e
            raise

    async def _exchange(self, ledger: Ledger, query: bytes) -> Any:
        """One query string and its last result (as PQexec's), within twice the
        statement timeout (the server's own bound; TCP keepalives bound the network):
        past that the connection is dropped and the outcome is unknown. Shielded: a
        batch once sent is answered even when run() is being cancelled (its only
        checkpoints are these waits, so the whole batch is); one cancel scope per
        exchange, where a shield per batch and a timeout per exchange were two."""
        pg = ledger.conn.pgconn
        results = None
        try:
            pg.send_query(query)
            with trio.CancelScope(shield=True, deadline=trio.current_time()
                                  + 2 * self.config.statement_timeout_ms / 1000):
                results = await drive(generators.execute(pg), pg.socket)
        except psycopg.Error as e:
            ledger.close()
            raise LedgerError(f"ledger batch not committed: {type(e).__name__}: {e}") from e
        if not results:
            ledger.close()
            raise LedgerError("ledger batch not committed: no answer in time")
        if pg.status != pq.ConnStatus.OK:
            ledger.close()
            raise LedgerError(f"ledger batch not committed: {pg.error_message!r}")
        return results[-1]

    def _expire(self, now: float) -> None:
        """Callers past their deadline hear "timed out": one still queued is taken out
        (never written), one being written keeps its place in the batch (outcome
        unknown to it, as when its wait was cancelled)."""
        for slot in [s for s in self._timed if s.deadline <= now]:
            self._timed.discard(slot)
            if not slot.taken:
                self._queued.remove(slot)  # at most queue_max long
                self._queued_transfers -= len(slot.request.transfers)
                self._room.release()  # a taken one's is released by _answer
            slot.expired = True
            slot.done.set()

    def _answer(self, batch: list[_Slot]) -> None:
        """The batch's callers run again; their room in the queue is free."""
        for s in batch:
            if s.outcome is None and s.error is None:  # a bug in _write: never hang
                s.error = LedgerError("ledger writer failed")
            s.done.set()
            self._room.release()

    # -- callers ---------------------------------------------------------------------------

    async def submit(self, request: Request, timeout_s: float | None = None) -> Outcome:
        """Queues one request and waits for its committed outcome. Raises LedgerError when
        the batch did not commit or ``timeout_s`` passed first (unknown outcome: retry
        with the same ids). The timeout is checked by run() every WATCH_S (a cancel
        scope per caller cost ~7 µs); without run() it is a cancel scope."""
        if timeout_s is not None and not self._watching:
            with trio.move_on_after(timeout_s):
                return await self.submit(request)
            raise LedgerError("ledger write timed out")
        if len(request.transfers) > BATCH_MAX:
            raise LedgerError(f"at most {BATCH_MAX} transfers per request")
        # a bad event must fail its own caller here, not the whole batch in the writer;
        # the checked text is what the writer MACs and stores (not encoded a second time);
        # an event object in both lists (the switch's common events) is checked once
        # (payloads given as their text: checked together, one PAN scan for them all)
        slot = _Slot(request)
        checked = slot.checked
        events = (*request.on_success, *request.on_failure)
        if events:
            if self.mac is None:
                raise LedgerError("this BatchWriter has no MAC function: cannot append events")
            texts = []
            good_types = ev.GOOD_TYPES
            for e in events:
                k = id(e)
                if k in checked:  # in both lists
                    continue
                if e.type not in good_types:
                    ev.check_type(e.type)
                p = e.payload
                if isinstance(p, str):
                    checked[k] = p
                    texts.append(p)
                else:
                    checked[k] = ev.canonical_payload(p)
            if texts:
                ev.check_texts(texts)
        if self._stopped:
            raise LedgerError("ledger writer is not running")
        try:  # the queue nearly always has room: no scheduler round for the hand-off
            self._room.acquire_nowait()
        except trio.WouldBlock:
            await self._room.acquire()
        if self._stopped:  # ended while this caller waited for room
            self._room.release()
            raise LedgerError("ledger writer is not running")
        now = slot.queued_at = trio.current_time()
        if timeout_s is not None:
            slot.deadline = now + timeout_s
            self._timed.add(slot)
        self._queued.append(slot)
        self._queued_transfers += len(request.transfers)
        wake = self._wake
        if wake is not None and self._queued_transfers >= self._want:
            self._wake = None
            wake.set()  # the writer waits for any request, or the batch is full now
        try:
            await slot.done.wait()
        finally:
            self._timed.discard(slot)
            if not slot.done.is_set() and not slot.taken:
                # cancelled before the writer took it: never written
                self._queued.remove(slot)  # at most queue_max long
                self._queued_transfers -= len(request.transfers)
                self._room.release()
        if slot.expired:
            raise LedgerError("ledger write timed out")
        if slot.error is not None:
            raise slot.error
        assert slot.outcome is not None
        return slot.outcome

    async def create_transfers(self, transfers: Sequence[Transfer],
                               on_success: Sequence[Event] = (),
                               on_failure: Sequence[Event] = (),
                               timeout_s: float | None = None) -> Outcome:
        return await self.submit(Request(tuple(transfers), tuple(on_success),
                                         tuple(on_failure)), timeout_s)

    async def append_events(self, events: Sequence[Event]) -> Outcome:
        return await self.submit(Request((), tuple(events)))

    async def hold(self, *, hold_id: int, debit_account_id: int, credit_account_id: int,
                   amount_minor: int, ledger: int, code: int, timeout_s: int,
                   on_success: Sequence[Event] = (),
                   on_failure: Sequence[Event] = ()) -> Outcome:
        """A pending transfer (authorization hold). ``outcome.results[0]``: ``created`` or
        ``exists`` = approved; ``exceeds_credits`` = insufficient funds (DE39 51)."""
        t = Transfer(hold_id, debit_account_id, credit_account_id, amount_minor, ledger, code,
                     TransferFlags.PENDING, 0, timeout_s)
        return await self.create_transfers([t], on_success, on_failure)

    async def post(self, *, post_id: int, pending_id: int, amount_minor: int = 0,
                   on_success: Sequence[Event] = (),
                   on_failure: Sequence[Event] = ()) -> Outcome:
        """Posts a hold, fully (amount_minor=0) or partly; the rest of the hold is released."""
        t = Transfer(post_id, amount=amount_minor, flags=TransferFlags.POST_PENDING_TRANSFER,
                     pending_id=pending_id)
        return await self.create_transfers([t], on_success, on_failure)

    async def void(self, *, void_id: int, pending_id: int,
                   on_success: Sequence[Event] = (),
                   on_failure: Sequence[Event] = ()) -> Outcome:
        t = Transfer(void_id, flags=TransferFlags.VOID_PENDING_TRANSFER, pending_id=pending_id)
        return await self.create_transfers([t], on_success, on_failure)

    async def run_expiry(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                         ) -> None:
        """The expiry job: every ``expiry_interval_s``, voids holds past their timeout.
        Runs on a connection of its own; accounts are locked in id order by both, so it
        never deadlocks with the writer."""
        def connect() -> Ledger:
            return Ledger(self.dsn, schema=self.schema, clock_ns=self.clock_ns,
                          statement_timeout_ms=self.config.statement_timeout_ms)

        led: Ledger | None = await trio.to_thread.run_sync(connect)
        task_status.started()
        failing = False
        try:
            while True:
                try:
                    if led is None:  # lost with the database: reconnect each round
                        led = await trio.to_thread.run_sync(connect)
                    while await trio.to_thread.run_sync(led.expire_pending) > 0:
                        pass
                    failing = False
                except (LedgerError, psycopg.Error) as e:
                    # next round retries; holds only expire later, never twice
                    if not failing:
                        log.warning("ledger_expiry_failed", extra={"fields": {
                            "error": _first_line(e)}})
                    failing = True
                    if led is not None and (led.conn.closed or led.conn.broken):
                        led.close()
                        led = None
                await trio.sleep(self.config.expiry_interval_s)
        finally:
            if led is not None:
                led.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))
    return s[k]
