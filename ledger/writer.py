"""The batched writer: many trio tasks submit, one writer thread writes, each caller gets
its own outcome only after COMMIT.

Back of the envelope: a COMMIT with synchronous_commit on costs one WAL flush (~1-5 ms on
this class of machine), a batch adds 2 round trips (store.py) and ~15 µs of Python per
transfer plus the event MACs. One transaction per transfer would top out near 1/flush = a
few hundred per second; one per batch of 1,000 gives ~1,000/(5 ms + 1 ms + 15 ms) ≈ 50k/s
of ledger work before Python's own overhead. While a batch commits, the next one fills,
so batches grow with load without any waiting at low load.

The writer is one long-lived thread (started by ``run``, ended when ``run`` ends), not a
``trio.to_thread`` call per batch: it takes the next batch itself as soon as one is
committed, and answers a whole batch with one ``run_sync_soon``. Before, a batch's end
went through the trio thread (the writer task woke, answered, collected the next batch),
and under load that turn was 1-6 ms of an idle connection per batch.

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
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
import trio

from . import events as ev
from .store import Ledger, Outcome, Request
from .types import BATCH_MAX, Event, LedgerError, Transfer, TransferFlags

# Records carry an event name as the message and their values in ``extra={"fields":
# ...}``: the switch's JSON log handler (on the "payswitch" logger) prints them as one
# JSON object per line, like its own.
log = logging.getLogger("payswitch.ledger.writer")
RECONNECT_LOG_EVERY = 25  # while the database is down: one line per this many tries
POLL_MAX_S = 0.001  # an idle writer looks for requests this often (at most max_wait_ms)
WATCH_S = 0.05  # callers' timeouts (submit's timeout_s) are checked this often


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


@dataclass
class WriterConfig:
    max_batch: int = 2000  # transfers per transaction
    max_wait_ms: float = 1.0  # after the first request, wait this long for more
    idle_poll_ms: float = 50.0  # with none queued, look every ~1 ms this long, then sleep
    queue_max: int = 20_000  # requests waiting for the writer
    reconnect_backoff_ms: float = 200.0
    statement_timeout_ms: int = 10_000
    expiry_interval_s: float = 1.0


@dataclass(eq=False)
class _Slot:
    request: Request
    done: trio.Event = field(default_factory=trio.Event)
    outcome: Outcome | None = None
    error: LedgerError | None = None
    checked: dict[int, str] = field(default_factory=dict)  # id(event) -> canonical payload
    queued_at: float = 0.0  # time.monotonic() when queued
    deadline: float = math.inf  # trio time: the caller hears "timed out" then (run() checks)
    expired: bool = False
    # under the writer's lock (caller and writer thread): in a batch being written, so the
    # outcome is the writer's now; a caller who gives up before takes it out of the queue
    taken: bool = False


class BatchWriter:
    """Owns one database connection, used by its one writer thread.

    Callers (trio tasks) queue requests; the writer thread takes every request queued so
    far (up to ``max_batch`` transfers), writes them in one transaction and answers the
    whole batch with one ``run_sync_soon`` into trio, then takes the next batch itself:
    while a batch commits the next one fills, and no trio task has to run between two
    batches (under load the trio thread is busy, and its turn took 1-6 ms).

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
        self._lock = threading.Lock()
        # the writer thread's wake-up: held while it sleeps, released once to wake it (a
        # plain lock: threading.Condition.notify costs ~10 µs of Python per request)
        self._bell = threading.Lock()
        self._bell.acquire()
        self._stop = threading.Event()  # run() is ending: ends a reconnect's sleep
        self._queued: collections.deque[_Slot] = collections.deque()  # under _lock
        self._queued_transfers = 0  # theirs (under _lock)
        self._waiting = False  # the writer thread waits for requests (under _lock)
        # what it waits for (under _lock): 0, any request (asleep, idle); n > 0, n more
        # transfers would fill a batch (collecting one, or polling an empty queue: see
        # _take), else its timeout ends the wait. A wake-up per request cost the trio
        # thread its lock release (~2% of the switch's samples at 48 terminals) and the
        # writer a turn for nothing.
        self._fill = 0
        self._stopping = False  # run() is ending: the thread ends (under _lock)
        self._stopped = False  # run() ended: submit refuses (trio thread only)
        self._ledger: Ledger | None = None  # the writer thread's, once started
        # callers waiting with a deadline, and whether run() checks them (trio thread)
        self._timed: set[_Slot] = set()
        self._watching = False
        self.batches = 0
        self.transfers = 0

    def queue_depth(self) -> int:
        """Requests queued, not yet taken by the writer (the metrics scrape's gauge)."""
        return len(self._queued)

    # -- the writer task and its thread ----------------------------------------------------

    async def run(self, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connects (retrying while the database is down), starts the writer thread and
        waits; when cancelled, ends the thread (after the batch it is writing) and fails
        whatever is still queued."""
        ended = trio.Event()
        started = False
        try:
            self._ledger = await self._connect()
            token = trio.lowlevel.current_trio_token()
            threading.Thread(target=self._write_loop, args=(token, ended),
                             name="payswitch-ledger-writer", daemon=True).start()
            started = True
            task_status.started()
            self._watching = True
            while True:  # one timer for every caller's timeout, not a cancel scope each
                await trio.sleep(WATCH_S)
                self._expire(trio.current_time())
        finally:
            self._watching = False
            self._stopped = True
            with self._lock:
                self._stopping = True
                left = list(self._queued)
                self._queued.clear()
                self._queued_transfers = 0
                self._ring()
            self._stop.set()
            # nobody waits forever: whatever is still queued fails (unknown -> retry later)
            stopped = LedgerError("ledger writer stopped")
            for slot in left:
                slot.error = stopped
                slot.done.set()
                self._room.release()
            if started:
                # the batch in flight is answered first; its waits are bounded by the
                # statement timeout and the TCP bounds, a reconnect's sleep ends on
                # _stop; then the connection is no longer the thread's
                with trio.CancelScope(shield=True):
                    await ended.wait()
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

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

    def _write_loop(self, token: trio.lowlevel.TrioToken, ended: trio.Event) -> None:
        """The writer thread: batch after batch until run() ends."""
        try:
            while True:
                batch = self._take()
                if batch is None:
                    return
                try:
                    self._write(batch)
                finally:  # every caller hears, whatever happened
                    with contextlib.suppress(trio.RunFinishedError):
                        token.run_sync_soon(self._answer, batch)
        finally:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(ended.set)

    def _ring(self) -> None:
        """Wakes the writer thread if it sleeps (under _lock)."""
        if self._waiting:
            self._waiting = False
            self._bell.release()

    def _take(self) -> list[_Slot] | None:
        """The next batch: every request queued so far, up to max_batch transfers,
        waiting for requests when there are none and, after the first, at most
        max_wait_ms from its arrival for more. None: run() is ending.

        With no request queued the writer first looks again every ``poll_s`` (at most
        max_wait_ms: a request found then still gets its whole wait from its arrival),
        and only after idle_poll_ms of that sleeps until a request rings. Under load the
        queue is empty often, briefly, between batches: a ring then cost the trio thread
        a futex wake and the writer's preemption of it (~1-3 % of the switch's samples)."""
        cfg = self.config
        batch: list[_Slot] = []
        n = 0
        max_wait_s = cfg.max_wait_ms / 1000
        poll_s = min(max_wait_s, POLL_MAX_S)
        polls = int(cfg.idle_poll_ms / 1000 / poll_s) if poll_s > 0 else 0
        while True:
            with self._lock:
                while self._queued and n < cfg.max_batch:
                    slot = self._queued.popleft()
                    slot.taken = True
                    batch.append(slot)
                    n += len(slot.request.transfers)
                    self._queued_transfers -= len(slot.request.transfers)
                if self._stopping:  # what it took is written; run() fails the rest
                    return batch or None
                if n >= cfg.max_batch:
                    return batch
                if batch:
                    left = batch[0].queued_at + max_wait_s - time.monotonic()
                    if left <= 0:
                        return batch
                    self._fill = cfg.max_batch - n  # rung when full
                elif polls > 0:  # idle for now: look again soon, rung only by a full batch
                    polls -= 1
                    left, self._fill = poll_s, cfg.max_batch
                else:
                    left = -1  # idle: until a request comes or run() ends
                    self._fill = 0
                self._waiting = True
            rung = self._bell.acquire(timeout=left)
            if not rung:
                with self._lock:
                    if self._waiting:  # nobody rang: the bell is still held
                        self._waiting = False
                        continue
                self._bell.acquire()  # rung just as the wait timed out: take it back

    def _write(self, batch: list[_Slot]) -> None:
        """One batch, one transaction (in the writer thread); reconnects first if the
        connection was lost (retrying until run() ends: the callers time out meanwhile)."""
        ledger = self._ledger
        failures = 0
        while ledger is None or ledger.conn.closed or ledger.conn.broken:
            if ledger is not None:
                ledger.close()
                self._ledger = ledger = None
            try:
                self._ledger = ledger = self._new_ledger()
            except LedgerError as e:
                self._log_failure(e, failures)
                failures += 1
                # run() ending ends this sleep (bounded anyway)
                if self._stop.wait(self.config.reconnect_backoff_ms / 1000):
                    err = LedgerError("ledger writer stopped")
                    for s in batch:
                        s.error = err
                    return
        if failures:
            log.warning("ledger_writer_reconnected", extra={"fields": {"failures": failures}})
        checked: dict[int, str] = {}
        for s in batch:
            checked.update(s.checked)
        try:
            outcomes = ledger.submit([s.request for s in batch], checked)
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

    def _expire(self, now: float) -> None:
        """Callers past their deadline hear "timed out": one still queued is taken out
        (never written), one being written keeps its place in the batch (outcome
        unknown to it, as when its wait was cancelled)."""
        for slot in [s for s in self._timed if s.deadline <= now]:
            self._timed.discard(slot)
            with self._lock:
                queued = not slot.taken
                if queued:
                    self._queued.remove(slot)  # at most queue_max long
                    self._queued_transfers -= len(slot.request.transfers)
            if queued:
                self._room.release()  # a taken one's is released by _answer
            slot.expired = True
            slot.done.set()

    def _answer(self, batch: list[_Slot]) -> None:
        """In trio: the batch's callers run again; their room in the queue is free."""
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
        slot = _Slot(request)
        checked = slot.checked
        texts = request.texts  # the caller's ready canonical texts: checked, not encoded
        if texts:
            ev.check_texts(texts.values())
            checked.update(texts)
        for e in (*request.on_success, *request.on_failure):
            if self.mac is None:
                raise LedgerError("this BatchWriter has no MAC function: cannot append events")
            ev.check_type(e.type)
            if id(e) not in checked:
                checked[id(e)] = ev.canonical_payload(e.payload)
        if self._stopped:
            raise LedgerError("ledger writer is not running")
        try:  # the queue nearly always has room: no scheduler round for the hand-off
            self._room.acquire_nowait()
        except trio.WouldBlock:
            await self._room.acquire()
        if self._stopped:  # ended while this caller waited for room
            self._room.release()
            raise LedgerError("ledger writer is not running")
        slot.queued_at = time.monotonic()
        if timeout_s is not None:
            slot.deadline = trio.current_time() + timeout_s
            self._timed.add(slot)
        with self._lock:
            self._queued.append(slot)
            self._queued_transfers += len(request.transfers)
            if self._waiting and self._queued_transfers >= self._fill:
                self._ring()  # asleep and idle, or the batch is full now
        try:
            await slot.done.wait()
        finally:
            self._timed.discard(slot)
            if not slot.done.is_set():
                with self._lock:
                    gave_up = not slot.taken
                    if gave_up:  # cancelled before the writer took it: never written
                        self._queued.remove(slot)  # at most queue_max long
                        self._queued_transfers -= len(request.transfers)
                if gave_up:
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
                               timeout_s: float | None = None,
                               texts: dict[int, str] | None = None) -> Outcome:
        return await self.submit(Request(tuple(transfers), tuple(on_success),
                                         tuple(on_failure), texts), timeout_s)

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
