"""Soak (marked slow): trio tasks and plain threads hammer one token for a while,
mixing derive-heavy operations (DUKPT, ARQC) with single calls; nothing crashes and
every answer stays right."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import trio

from payswitch.hsm import AsyncHsm

K = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "4123456789012345"
SECONDS = 8.0


@pytest.mark.slow
def test_soak_threads_and_trio(hsm_scratch):
    tag = uuid.uuid4().hex[:8]
    cvk, bdk, zpk, mk = (f"{p}-{tag}" for p in ("cvk", "bdk", "zpk", "mk"))
    for label, kind in ((cvk, "CVK"), (bdk, "BDK"), (zpk, "ZPK"), (mk, "MK-AC")):
        hsm_scratch.import_key_components(label, kind, [K])
    arqc = hsm_scratch.generate_arqc(mk, PAN, "00", b"\x00\x01", b"data")
    deadline = time.monotonic() + SECONDS
    errors: list[BaseException] = []
    counts = {"thread": 0, "trio": 0}

    def thread_work() -> None:
        try:
            while time.monotonic() < deadline:
                n = 1 + counts["thread"] % 250
                ksn = bytes.fromhex("FFFF9876543210E00000")[:-1] + bytes([n])
                blk = hsm_scratch.dukpt_encrypt_pin(bdk, ksn, "1234", PAN)
                hsm_scratch.translate_pin_dukpt(blk, ksn, PAN, bdk, zpk)
                counts["thread"] += 1
        except BaseException as e:
            errors.append(e)

    async def trio_work() -> None:
        ahsm = AsyncHsm(hsm_scratch, max_pending=1000)

        async def one() -> None:
            while time.monotonic() < deadline:
                assert await ahsm.verify_cvv(cvk, PAN, "8701", "101", "561")
                ok, _ = await ahsm.verify_arqc(mk, PAN, "00", b"\x00\x01", b"data", arqc)
                assert ok
                counts["trio"] += 1

        async with trio.open_nursery() as n:
            for _ in range(20):
                n.start_soon(one)

    threads = [threading.Thread(target=thread_work) for _ in range(3)]
    for t in threads:
        t.start()
    trio.run(trio_work)
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert counts["thread"] > 0 and counts["trio"] > 0
