"""Issue 9, finding 3: a reversal is built from its original. Its card must be the
original's (decrypted from the journal in the HSM), its amount the original's; a 0400
without DE2 goes to the issuer with the original's PAN. A mismatch is refused (25 for
the card, 13 for the amount), nothing reaches the issuer and nothing is voided."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from switchkit import (
    PAN,
    FakeIssuer,
    Terminal,
    approve,
    purchase,
    running_switch,
    serving,
    trio_test,
)
from test_switch_dbfaults import ledger_cfg

from payswitch.codecs.iso8583 import Message
from payswitch.hsm import devkeys
from payswitch.hsm.token import DEV_PIN
from payswitch.simulators.cards import with_luhn
from payswitch.switch.ledgerwire import det_id
from payswitch.switch.messages import duplicate_key

PIN_ENV = "PAYSWITCH_TEST_HSM_PIN"
OTHER = with_luhn("476173900101002")  # another Visa card


@pytest.fixture(autouse=True)
def ledger_keys(monkeypatch):
    monkeypatch.setenv("PAYSWITCH_PAN_TOKEN_KEY", "ffeeddccbbaa99887766554433221100")
    monkeypatch.setenv("PAYSWITCH_EVENT_MAC_KEY", "00112233445566778899aabbccddeeff")


@pytest.fixture(scope="module")
def switch_token(hsm):
    devkeys.load_switch_keys(hsm)
    os.environ[PIN_ENV] = DEV_PIN
    return hsm


def hsm_ledger_cfg(dsn: str, port: int) -> dict:
    cfg = ledger_cfg(dsn, port)
    cfg["hsm"] = {"token": "switch-test", "pin_env": PIN_ENV}
    return cfg


def hold_state(dsn: str, msg: Message) -> str | None:
    hold = uuid.UUID(int=det_id("hold", duplicate_key("T:TERM0001", msg)))
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select state from pending_transfers where id = %s",
                           (hold,)).fetchone()
    return row[0] if row else None


def reversal_of(orig: Message, stan: str, **fields) -> Message:
    return orig.replace(mti="0400", stan=stan, original_data="0200" + orig.stan
                        + orig.transmission_time + "0" * 22, **fields)


@trio_test
async def test_reversal_is_built_from_its_original(dsn, switch_token):
    issuer = FakeIssuer(approve)
    async with serving(issuer), running_switch(hsm_ledger_cfg(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        orig = purchase("000001", 4_000)
        assert (await term.request(orig)).response_code == "00"
        other_card = await term.request(reversal_of(orig, "000002", pan=OTHER))
        other_amount = await term.request(reversal_of(orig, "000003", amount_minor=1))
        assert hold_state(dsn, orig) == "pending"  # nothing voided
        assert not issuer.traffic("04")  # nothing reversed
        no_pan = await term.request(reversal_of(orig, "000004", pan=None))
        await term.aclose()
    assert (other_card.response_code, other_amount.response_code) == ("25", "13")
    assert no_pan.response_code == "00"
    (sent,) = issuer.traffic("0400")
    assert sent.pan == PAN and sent.amount_minor == 4_000
    (first,) = issuer.traffic("0200")
    assert sent.original_data[:20] == "0200" + first.stan + first.transmission_time
    assert hold_state(dsn, orig) == "voided"


@trio_test
async def test_without_hsm_a_reversal_for_another_card_is_refused(dsn):
    """No PAN at rest without [hsm]: the card is compared with the original's masked
    PAN (first six, last four)."""
    issuer = FakeIssuer(approve)
    async with serving(issuer), running_switch(ledger_cfg(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        orig = purchase("000001", 4_000)
        assert (await term.request(orig)).response_code == "00"
        resp = await term.request(reversal_of(orig, "000002", pan=OTHER))
        assert resp.response_code == "25"
        assert (await term.request(reversal_of(orig, "000003"))).response_code == "00"
        await term.aclose()
    assert [m.pan for m in issuer.traffic("0400")] == [PAN]
    assert hold_state(dsn, orig) == "voided"
