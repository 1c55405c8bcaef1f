"""Safe from threads and from trio: many concurrent callers, one library, no crash."""

from __future__ import annotations

import threading
import uuid

import pytest
import trio

from payswitch.hsm import AsyncHsm, HsmBusyError

K = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "4123456789012345"


def test_threads_share_one_hsm(hsm_scratch):
    cvk, bdk, zpk = (f"{p}-{uuid.uuid4().hex[:8]}" for p in ("cvk", "bdk", "zpk"))
    hsm_scratch.import_key_components(cvk, "CVK", [K])
    hsm_scratch.import_key_components(bdk, "BDK", [K])
    hsm_scratch.import_key_components(zpk, "ZPK", [K])
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(15):
                assert hsm_scratch.generate_cvv(cvk, PAN, "8701", "101") == "561"
                ksn = bytes.fromhex("FFFF9876543210E00000")[:-1] + bytes([1 + (i + j) % 200])
                blk = hsm_scratch.dukpt_encrypt_pin(bdk, ksn, "1234", PAN)  # create/destroy
                hsm_scratch.translate_pin_dukpt(blk, ksn, PAN, bdk, zpk)
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_async_hsm_from_trio(hsm_scratch):
    cvk = f"cvk-{uuid.uuid4().hex[:8]}"
    hsm_scratch.import_key_components(cvk, "CVK", [K])
    ahsm = AsyncHsm(hsm_scratch, max_pending=64)
    results: list[str] = []
    ticks = 0

    async def ticker(stop: trio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await trio.sleep(0)

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(ticker, stop)
            async with trio.open_nursery() as workers:
                for _ in range(40):
                    workers.start_soon(
                        lambda: _one(ahsm, cvk, results)
                    )
            stop.set()

    trio.run(main)
    assert results == ["561"] * 40
    assert ticks > 0  # the loop kept running while the HSM worked
    assert ahsm.pending == 0


async def _one(ahsm: AsyncHsm, cvk: str, results: list[str]) -> None:
    results.append(await ahsm.generate_cvv(cvk, PAN, "8701", "101"))


def test_async_queue_is_bounded(hsm_scratch):
    cvk = f"cvk-{uuid.uuid4().hex[:8]}"
    hsm_scratch.import_key_components(cvk, "CVK", [K])
    ahsm = AsyncHsm(hsm_scratch, max_pending=2)
    outcomes: list[object] = []

    async def one() -> None:
        try:
            outcomes.append(await ahsm.verify_cvv(cvk, PAN, "8701", "101", "561"))
        except HsmBusyError as e:
            outcomes.append(e)

    async def main() -> None:
        async with trio.open_nursery() as n:
            for _ in range(10):
                n.start_soon(one)

    trio.run(main)
    assert outcomes.count(True) >= 2
    assert any(isinstance(o, HsmBusyError) for o in outcomes)
    with pytest.raises(AttributeError):
        ahsm.close  # noqa: B018  lifecycle stays sync-only


def test_inline_calls_run_in_the_loop_and_never_queue(hsm_scratch):
    """calls="inline": each call runs to its end in the trio thread, so concurrent
    callers are never refused as busy (max_pending=1 refuses them in thread mode,
    above); calls="thread" runs them in another thread."""
    cvk = f"cvk-{uuid.uuid4().hex[:8]}"
    hsm_scratch.import_key_components(cvk, "CVK", [K])
    inline = AsyncHsm(hsm_scratch, max_pending=1, calls="inline")
    threaded = AsyncHsm(hsm_scratch, max_pending=1, calls="thread")
    outcomes: list[object] = []
    where: dict[str, int] = {}

    async def one() -> None:
        outcomes.append(await inline.verify_cvv(cvk, PAN, "8701", "101", "561"))

    async def main() -> None:
        async with trio.open_nursery() as n:
            for _ in range(10):
                n.start_soon(one)
        where["inline"] = await inline.call(threading.get_ident)
        where["thread"] = await threaded.call(threading.get_ident)

    trio.run(main)
    assert outcomes == [True] * 10
    assert where["inline"] == threading.get_ident()
    assert where["thread"] != threading.get_ident()
    with pytest.raises(ValueError, match="calls"):
        AsyncHsm(hsm_scratch, calls="process")
