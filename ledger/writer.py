"""The batched writer: many trio tasks submit, one task writes, each caller gets its own
outcome only after COMMIT.

Back of the envelope: a COMMIT with synchronous_commit on costs one WAL flush (~1-5 ms on
this class of machine), a batch adds ~12 round trips (~1 ms) and ~15 µs of Python per
transfer. One transaction per transfer would top out near 1/flush = a few hundred per
second; one per batch of 1,000 gives ~1,000/(5 ms + 1 ms + 15 ms) ≈ 50k/s of ledger work
before Python's own overhead. While a batch commits, the next one fills, so batches grow
with load without any waiting at low load.

Bounds: the queue holds at most ``queue_max`` requests (callers wait when it is full), a
batch holds at most ``max_batch`` transfers, and the writer waits at most ``max_wait_ms``
for a batch to fill after its first request.
"""

from __future__ import annotations

import logging
import math
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


@dataclass
class _Slot:
    request: Request
    done: trio.Event = field(default_factory=trio.Event)
    outcome: Outcome | None = None
    error: LedgerError | None = None
    checked: dict[int, str] = field(default_factory=dict)  # id(event) -> canonical payload
    taken: bool = False  # in a batch being written: the outcome is the writer's now
    abandoned: bool = False  # the caller gave up before that: skipped, never written


class BatchWriter:
    """Owns one database connection, used only by its writer task (in a worker thread).

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
        self._send, self._recv = trio.open_memory_channel[_Slot](self.config.queue_max)
        self._ledger: Ledger | None = None
        self._limiter = trio.CapacityLimiter(1)
        self.batches = 0
        self.transfers = 0

    # -- the writer task -------------------------------------------------------------------

    async def run(self, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._connect()
        task_status.started()
        try:
            while True:
                batch = await self._collect()
                await self._write(batch)
        finally:
            # nobody waits forever: whatever is still queued fails (unknown -> retry later)
            stopped = LedgerError("ledger writer stopped")
            while True:  # no checkpoint in this loop: nothing can slip in before close()
                try:
                    slot = self._recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                slot.error = stopped
                slot.done.set()
            self._recv.close()
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    async def _connect(self) -> None:
        failures = 0
        while self._ledger is None:
            try:
                self._ledger = await trio.to_thread.run_sync(
                    lambda: Ledger(self.dsn, mac=self.mac, schema=self.schema,
                                   clock_ns=self.clock_ns,
                                   statement_timeout_ms=self.config.statement_timeout_ms),
                    limiter=self._limiter)
            except LedgerError as e:
                # the first failure, then one line per RECONNECT_LOG_EVERY tries
                if failures % RECONNECT_LOG_EVERY == 0:
                    log.warning("ledger_writer_reconnecting", extra={"fields": {
                        "error": _first_line(e), "failures": failures + 1}})
                failures += 1
                await trio.sleep(self.config.reconnect_backoff_ms / 1000)
        if failures:
            log.warning("ledger_writer_reconnected", extra={"fields": {"failures": failures}})

    async def _collect(self) -> list[_Slot]:
        first = await self._receive_live()
        batch, n = [first], len(first.request.transfers)
        deadline = trio.current_time() + self.config.max_wait_ms / 1000
        while n < self.config.max_batch:
            try:
                slot = self._recv.receive_nowait()
            except trio.WouldBlock:
                with trio.move_on_at(deadline) as scope:
                    slot = await self._recv.receive()
                if scope.cancelled_caught:
                    break
            if slot.abandoned:
                continue
            slot.taken = True
            batch.append(slot)
            n += len(slot.request.transfers)
        return batch

    async def _receive_live(self) -> _Slot:
        """The next request whose caller still waits. A caller that gave up (its own
        timeout, e.g. while the database was down) treats the write as failed and may
        already have undone it; writing it afterwards would leave it done."""
        while True:
            slot = await self._recv.receive()
            if not slot.abandoned:
                slot.taken = True
                return slot

    async def _write(self, batch: list[_Slot]) -> None:
        if self._ledger is None or self._ledger.conn.closed or self._ledger.conn.broken:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None
            await self._connect()
        ledger = self._ledger
        assert ledger is not None
        checked: dict[int, str] = {}
        for s in batch:
            checked.update(s.checked)
        try:
            outcomes = await trio.to_thread.run_sync(
                ledger.submit, [s.request for s in batch], checked, limiter=self._limiter)
        except Exception as e:  # noqa: BLE001 - every caller must hear about it
            err = e if isinstance(e, LedgerError) else LedgerError(
                f"ledger batch failed: {type(e).__name__}: {e}")
            if not isinstance(e, LedgerError):
                log.error("ledger_writer_batch_bug", exc_info=e)
            for s in batch:
                s.error = err
                s.done.set()
            return
        self.batches += 1
        for s, o in zip(batch, outcomes, strict=True):
            self.transfers += len(s.request.transfers)
            s.outcome = o
            s.done.set()

    # -- callers ---------------------------------------------------------------------------

    async def submit(self, request: Request) -> Outcome:
        """Queues one request and waits for its committed outcome. Raises LedgerError when
        the batch did not commit (unknown outcome: retry with the same ids)."""
        if len(request.transfers) > BATCH_MAX:
            raise LedgerError(f"at most {BATCH_MAX} transfers per request")
        # a bad event must fail its own caller here, not the whole batch in the writer;
        # the checked text is what the writer MACs and stores (not encoded a second time);
        # an event object in both lists (the switch's common events) is checked once
        slot = _Slot(request)
        checked = slot.checked
        for e in (*request.on_success, *request.on_failure):
            if self.mac is None:
                raise LedgerError("this BatchWriter has no MAC function: cannot append events")
            if id(e) not in checked:
                ev.check_type(e.type)
                checked[id(e)] = ev.canonical_payload(e.payload)
        try:
            try:  # the queue nearly always has room: no scheduler round for the hand-off
                self._send.send_nowait(slot)
            except trio.WouldBlock:
                await self._send.send(slot)
            await slot.done.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise LedgerError("ledger writer is not running") from e
        finally:
            if not slot.done.is_set() and not slot.taken:
                slot.abandoned = True  # cancelled before the writer took it: never written
        if slot.error is not None:
            raise slot.error
        assert slot.outcome is not None
        return slot.outcome

    async def create_transfers(self, transfers: Sequence[Transfer],
                               on_success: Sequence[Event] = (),
                               on_failure: Sequence[Event] = ()) -> Outcome:
        return await self.submit(Request(tuple(transfers), tuple(on_success),
                                         tuple(on_failure)))

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
