"""The BatchWriter's one long-lived writer thread: who is written when callers give up,
and that the thread ends with ``run()``. A MAC function that blocks until the test lets
it go holds the writer inside a batch, so "queued" and "being written" are states the
test controls, not timing it hopes for."""

from __future__ import annotations

import threading

import trio
import trio.testing

from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.store import Ledger
from payswitch.ledger.types import Account, Event, LedgerError, Transfer
from payswitch.ledger.writer import BatchWriter, WriterConfig

USD = 840
BANK, SHOP = 1, 2
WAIT_S = 10  # every wait on the writer thread is bounded by this


class GatedMac:
    """HMAC-SHA256, but the first call blocks until ``release()``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self._mac = hmac_sha256(b"writer-thread-key-0123456789")

    def __call__(self, data: bytes) -> bytes:
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the test never released the MAC"
        return self._mac(data)


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
    mac = GatedMac()
    writer = BatchWriter(pg_dsn, mac=mac, config=WriterConfig(max_wait_ms=0))
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
            first: list[trio.CancelScope] = []
            second: list[trio.CancelScope] = []
            nursery.start_soon(caller, "taken", 1, first)
            # the writer took the first request: its thread waits inside the MAC
            await trio.to_thread.run_sync(mac.entered.wait, WAIT_S)
            nursery.start_soon(caller, "queued", 2, second)
            await trio.testing.wait_all_tasks_blocked()
            assert writer.queue_depth() == 1
            first[0].cancel()  # its batch is being written: the outcome is the writer's
            second[0].cancel()  # still queued: out of the queue, never written
            await trio.testing.wait_all_tasks_blocked()
            assert writer.queue_depth() == 0
            mac.gate.set()
            # the writer goes on: a later request is written and answered
            with trio.fail_after(WAIT_S):
                out = await writer.create_transfers([_t(3)])
            assert out.results == ("created",)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert outcomes == {"taken": "cancelled", "queued": "cancelled"}
    assert _stored(pg_dsn, [1, 2, 3]) == [1, 3]
    assert writer.batches == 2


def test_the_writer_thread_ends_with_run_and_queued_callers_hear_it(pg_dsn):
    _setup(pg_dsn)
    mac = GatedMac()
    writer = BatchWriter(pg_dsn, mac=mac, config=WriterConfig(max_wait_ms=0))
    errors: list[str] = []

    async def caller(i: int) -> None:
        try:
            await writer.create_transfers([_t(i)], [Event(2000 + i, "held", {"i": i})])
        except LedgerError as e:
            errors.append(f"{i}: {e}")

    async def main() -> None:
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run)
                [thread] = [t for t in threading.enumerate()
                            if t.name == "payswitch-ledger-writer"]
                outer.start_soon(caller, 1)  # taken, then held in the MAC
                await trio.to_thread.run_sync(mac.entered.wait, WAIT_S)
                outer.start_soon(caller, 2)  # queued behind it
                await trio.testing.wait_all_tasks_blocked()
                outer.start_soon(release, mac)  # once run() waits for its thread
                nursery.cancel_scope.cancel()  # run() ends ...
            # ... after the batch it was writing: that one committed and was answered
            assert errors == ["2: ledger writer stopped"]
            await trio.to_thread.run_sync(thread.join, WAIT_S)
            assert not thread.is_alive()
        with trio.fail_after(WAIT_S):
            try:
                await writer.create_transfers([_t(3)])
            except LedgerError as e:
                assert "not running" in str(e)
            else:
                raise AssertionError("a stopped writer took a request")

    trio.run(main)
    assert _stored(pg_dsn, [1, 2, 3]) == [1]


async def release(mac: GatedMac) -> None:
    await trio.testing.wait_all_tasks_blocked()
    mac.gate.set()


def test_a_batch_collects_until_full_or_max_wait(pg_dsn):
    """While a batch collects, the writer is woken by requests only when they fill it:
    with a max_wait far beyond the test's bound, a full batch is written at once (one
    transaction), also after a request cancelled while queued took its count back."""
    _setup(pg_dsn)
    mac = GatedMac()
    writer = BatchWriter(pg_dsn, mac=mac, config=WriterConfig(max_batch=4,
                                                              max_wait_ms=600_000))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            with trio.fail_after(WAIT_S):
                async with trio.open_nursery() as callers:
                    # full at once: written, then held in the MAC
                    callers.start_soon(writer.create_transfers, [_t(i) for i in range(40, 44)],
                                       [Event(3000, "held", {})])
                    await trio.to_thread.run_sync(mac.entered.wait, WAIT_S)
                    with trio.CancelScope() as gave_up:  # queued, cancelled: never written
                        callers.start_soon(_cancel_when_blocked, gave_up)
                        await writer.create_transfers([_t(44), _t(45), _t(46)])
                    mac.gate.set()
                    callers.start_soon(writer.create_transfers, [_t(50)])
                    while writer.queue_depth() or writer.batches < 1:  # taken: collecting
                        await trio.sleep(0.001)
                    callers.start_soon(writer.create_transfers, [_t(51)])  # not a wake-up
                    await trio.testing.wait_all_tasks_blocked()
                    # these fill the batch: the writer is woken, long before max_wait
                    callers.start_soon(writer.create_transfers, [_t(52), _t(53)])
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert writer.batches == 2
    assert _stored(pg_dsn, list(range(40, 47)) + [50, 51, 52, 53]) == [
        40, 41, 42, 43, 50, 51, 52, 53]


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


class CountingBell:
    """The writer's bell, counting how often the trio side rang it."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock, self.rings = lock, 0

    def acquire(self, timeout: float = -1) -> bool:
        return self.lock.acquire(timeout=timeout)

    def release(self) -> None:
        self.rings += 1
        self.lock.release()


def test_an_idle_writer_polls_then_sleeps_until_a_request_rings(pg_dsn):
    """Requests that come while the writer looks at its empty queue (``idle_poll_ms``
    after its last batch, as between batches under load) are found without a wake-up
    from the trio thread; a writer past that sleeps, and each request wakes it. Either
    way every request is written."""
    _setup(pg_dsn)
    for k, (idle_poll_ms, rings) in enumerate(((600_000.0, 0), (0.0, 3))):
        writer = BatchWriter(pg_dsn, config=WriterConfig(max_wait_ms=1,
                                                         idle_poll_ms=idle_poll_ms))
        bell = CountingBell(writer._bell)
        writer._bell = bell  # type: ignore[assignment]
        ids = [100 + 10 * k + i for i in range(3)]
        rung: list[int] = []

        async def main(writer: BatchWriter = writer, ids: list[int] = ids,
                       bell: CountingBell = bell, rung: list[int] = rung) -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run)
                with trio.fail_after(WAIT_S):
                    for i in ids:  # one after another: the writer is idle before each
                        assert (await writer.create_transfers([_t(i)])).ok
                        await trio.sleep(0.01)
                rung.append(bell.rings)  # before run() ends (which rings to stop it)
                nursery.cancel_scope.cancel()

        trio.run(main)
        assert rung == [rings]
        assert _stored(pg_dsn, ids) == ids


def test_callers_past_their_timeout_hear_it_whether_queued_or_being_written(pg_dsn):
    """submit's ``timeout_s``: a caller whose request is being written (held in the MAC)
    and one whose request is queued behind it both hear "timed out", long before the
    MAC is let go; the queued one is never written, the one being written is (its
    outcome was the writer's, as when a caller's wait is cancelled)."""
    _setup(pg_dsn)
    mac = GatedMac()
    writer = BatchWriter(pg_dsn, mac=mac, config=WriterConfig(max_batch=1, max_wait_ms=0))
    errors: list[str] = []

    async def call(transfers: list[Transfer], events: list[Event]) -> None:
        try:
            await writer.create_transfers(transfers, events, timeout_s=0.2)
        except LedgerError as e:
            errors.append(str(e))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            with trio.fail_after(WAIT_S):
                async with trio.open_nursery() as callers:
                    callers.start_soon(call, [_t(60)], [Event(6000, "held", {})])
                    await trio.to_thread.run_sync(mac.entered.wait, WAIT_S)
                    callers.start_soon(call, [_t(61)], [])  # behind it: max_batch is 1
                assert not mac.gate.is_set() and errors == ["ledger write timed out"] * 2
                mac.gate.set()
                assert (await writer.create_transfers([_t(62)], timeout_s=WAIT_S)).ok
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert _stored(pg_dsn, [60, 61, 62]) == [60, 62]
