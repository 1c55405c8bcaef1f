"""Issue 9, finding 2: once a reversal is decided, the original's hold is voided exactly
once, also when the 0400's outcome is unknown (issuer timeout) and across a SIGKILL
during an online 0400; `ledger verify` reports a reversed original whose hold was not
voided."""

from __future__ import annotations

import json
import signal

import psycopg
import pytest
import trio
from switchkit import FakeIssuer, Terminal, approve, purchase, running_switch, serving, trio_test
from test_switch_dbfaults import ledger_cfg
from test_switch_process import SwitchProcess, write_toml

import payswitch.ledger as L
from payswitch.codecs.iso8583 import Message
from payswitch.switch.ledgerwire import det_id
from payswitch.switch.messages import duplicate_key

MAC_KEY = "00112233445566778899aabbccddeeff"
TOKEN_KEY = "ffeeddccbbaa99887766554433221100"


@pytest.fixture(autouse=True)
def ledger_keys(monkeypatch):
    monkeypatch.setenv("PAYSWITCH_EVENT_MAC_KEY", MAC_KEY)
    monkeypatch.setenv("PAYSWITCH_PAN_TOKEN_KEY", TOKEN_KEY)


def hold_state(dsn: str, msg: Message) -> str | None:
    import uuid

    hold = uuid.UUID(int=det_id("hold", duplicate_key("T:TERM0001", msg)))
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select state from pending_transfers where id = %s",
                           (hold,)).fetchone()
    return row[0] if row else None


def reversal(orig: Message, stan: str) -> Message:
    return orig.replace(mti="0400", stan=stan,
                        original_data="0200" + orig.stan + orig.transmission_time + "0" * 22)


def verify(dsn: str) -> L.Report:
    with psycopg.connect(dsn) as conn:
        return L.verify(conn, L.hmac_sha256(bytes.fromhex(MAC_KEY)))


async def until(pred, timeout_s: float = 15) -> None:
    with trio.fail_after(timeout_s):
        while not pred():
            await trio.sleep(0.05)


@trio_test
async def test_reversal_timing_out_at_the_issuer_voids_the_hold_and_queues_0420(dsn):
    acking = {"0420": False}

    def answer(m: Message) -> Message | None:
        if m.mti.startswith("040"):
            return None  # the 0400 times out: its outcome is unknown
        if m.mti.startswith("042") and not acking["0420"]:
            return None
        return approve(m)

    issuer = FakeIssuer(answer)
    async with serving(issuer), running_switch(ledger_cfg(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        orig = purchase("000001", 4_200)
        assert (await term.request(orig)).response_code == "00"
        assert hold_state(dsn, orig) == "pending"
        resp = await term.request(reversal(orig, "000002"))
        # Issuer silent: the terminal is told 91, the 0420 is queued, the hold voided.
        assert resp.response_code == "91"
        await until(lambda: hold_state(dsn, orig) == "voided")
        acking["0420"] = True
        await issuer.wait_for(lambda: issuer.traffic("042"), 10)
        await term.aclose()
    (first,) = issuer.traffic("0200")
    assert {m.original_data[4:10] for m in issuer.traffic("042")} == {first.stan}
    report = verify(dsn)
    assert report.ok and report.expected_voids_checked, report.to_text()


@trio_test
async def test_sigkill_during_online_0400_voids_the_original_hold_at_start(dsn, tmp_path):
    def answer(m: Message) -> Message | None:
        return None if m.mti.startswith("040") else approve(m)

    issuer = FakeIssuer(answer)
    async with serving(issuer):
        path = write_toml(tmp_path / "switch.toml", ledger_cfg(dsn, issuer.port))
        sw = await SwitchProcess(path).start()
        try:
            term = await Terminal.connect(sw.ports["pos"])
            orig = purchase("000001", 5_100)
            assert (await term.request(orig)).response_code == "00"
            await term.send(reversal(orig, "000002"))
            await issuer.wait_for(lambda: issuer.traffic("0400"), 5)
            sw.signal(signal.SIGKILL)
            await sw.wait()
            await term.aclose()
            assert hold_state(dsn, orig) == "pending"
            report = verify(dsn)  # the reversal is decided, the hold not yet voided
            assert not report.ok and report.unvoided_count == 1, report.to_text()
            sw = await SwitchProcess(path).start()
            await until(lambda: hold_state(dsn, orig) == "voided")
            await issuer.wait_for(lambda: issuer.traffic("042"), 10)
        finally:
            await sw.kill()
    report = verify(dsn)
    assert report.ok, report.to_text()
    assert json.loads(report.to_json())["unvoided_count"] == 0
