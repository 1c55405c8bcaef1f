"""The switch wired to the ledger: on-us authorization, off-us holds, reversal -> void,
completion -> post, expiry, multi-currency, outbox to MQTT, `ledger verify` after traffic.
Real PostgreSQL, real sockets, real Mosquitto (mqtt_broker fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal

import psycopg
import pytest
import trio
from mqttkit import Subscriber
from switchkit import (
    PAN,
    FakeIssuer,
    Terminal,
    approve,
    config_dict,
    purchase,
    running_switch,
    serving,
    trio_test,
)

import payswitch.ledger as L
from payswitch.simulators.cards import with_luhn
from payswitch.switch.errors import StoreError
from payswitch.switch.ledgerwire import (
    LedgerWire,
    clear,
    det_id,
    keyed_pan_token,
)
from payswitch.switch.messages import duplicate_key

MAC_KEY = "00112233445566778899aabbccddeeff"
TOKEN_KEY = "ffeeddccbbaa99887766554433221100"
MAC = L.hmac_sha256(bytes.fromhex(MAC_KEY))
ONUS_USD = with_luhn("999001000000001")  # on-us, billed in USD
ONUS_JPY = with_luhn("999002000000001")
ONUS_BHD = with_luhn("999003000000001")
ONUS_POOR = with_luhn("999004000000001")  # opening balance 10.00 USD


@pytest.fixture(autouse=True)
def ledger_keys(monkeypatch):
    monkeypatch.setenv("PAYSWITCH_EVENT_MAC_KEY", MAC_KEY)
    monkeypatch.setenv("PAYSWITCH_PAN_TOKEN_KEY", TOKEN_KEY)


def ledger_cfg(dsn: str, port: int, **ledger) -> dict:
    cfg = config_dict(dsn, port)
    cfg["ledger"] = {"enabled": True, "currencies": ["USD", "EUR", "JPY", "BHD"],
                     "max_wait_ms": 1, **ledger}
    cfg["onus"] = [
        {"prefix": "999001", "currency": "USD", "opening_balance_minor": 100_000},
        {"prefix": "999002", "currency": "JPY", "opening_balance_minor": 1_000_000},
        {"prefix": "999003", "currency": "BHD", "opening_balance_minor": 1_000_000},
        {"prefix": "999004", "currency": "USD", "opening_balance_minor": 1_000},
    ]
    return cfg


def dup_key(msg) -> str:
    return duplicate_key("T:TERM0001", msg)


def hold_state(dsn: str, msg) -> str | None:
    hold = uuid.UUID(int=det_id("hold", dup_key(msg)))
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select state from pending_transfers where id = %s",
                           (hold,)).fetchone()
    return row[0] if row else None


def event_types(dsn: str, msg) -> list[str]:
    pid = uuid.UUID(int=LedgerWire.payment_id(dup_key(msg)))
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "select type from events where payment_id = %s order by seq", (pid,))]


def balance(dsn: str, account_id: int) -> L.AccountBalance:
    with L.Ledger(dsn) as led:
        (b,) = led.lookup_accounts([account_id])
    return b


def verify_ok(dsn: str) -> L.Report:
    with psycopg.connect(dsn) as conn:
        report = L.verify(conn, MAC)
    assert report.ok, report.to_text()
    assert report.ledger_balanced
    return report


def reversal(orig, stan: str, mti: str = "0400"):
    return orig.replace(mti=mti, stan=stan,
                        original_data="0200" + orig.stan + orig.transmission_time + "0" * 22)


@trio_test
async def test_onus_approve_insufficient_reverse_complete(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(ledger_cfg(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        ok = purchase("000001", 2_500, pan=ONUS_USD).replace(currency="840")
        r = await term.request(ok)
        assert r.response_code == "00" and r.auth_code
        poor = purchase("000002", 5_000, pan=ONUS_POOR).replace(currency="840")
        assert (await term.request(poor)).response_code == "51"
        rev = purchase("000003", 700, pan=ONUS_USD).replace(currency="840")
        assert (await term.request(rev)).response_code == "00"
        assert (await term.request(reversal(rev, "000004"))).response_code == "00"
        comp = purchase("000005", 4_000, pan=ONUS_USD).replace(currency="840")
        assert (await term.request(comp)).response_code == "00"
        advice = comp.replace(mti="0220", stan="000006", amount_minor=3_000,
                              original_data="0200" + comp.stan + comp.transmission_time
                              + "0" * 22)
        assert (await term.request(advice)).response_code == "00"
        await term.aclose()
    assert not issuer.traffic()  # on-us: no issuer involved
    assert hold_state(dsn, ok) == "pending"
    assert event_types(dsn, ok) == ["received", "routed", "approved", "held"]
    assert hold_state(dsn, poor) is None
    assert event_types(dsn, poor) == ["received", "routed", "declined"]
    assert hold_state(dsn, rev) == "voided"
    assert event_types(dsn, rev)[-1] == "reversed"
    assert hold_state(dsn, comp) == "posted"
    assert event_types(dsn, comp)[-1] == "posted"
    token = keyed_pan_token(bytes.fromhex(TOKEN_KEY))(ONUS_USD)
    card = balance(dsn, LedgerWire.cardholder(token, "USD"))
    assert (card.debits_pending, card.debits_posted, card.credits_posted) == (2_500, 3_000,
                                                                             100_000)
    with psycopg.connect(dsn) as conn:  # no clear PAN anywhere in the ledger
        dump = str(conn.execute("select * from events").fetchall())
    assert ONUS_USD not in dump, dump[dump.find(ONUS_USD) - 300:dump.find(ONUS_USD) + 30]
    assert "999001******0010" in dump
    verify_ok(dsn)


@trio_test
async def test_offus_hold_void_decline_and_clearing(dsn):
    declined_pan = PAN[:-1] + "9"
    issuer = FakeIssuer(lambda m: approve(m) if m.pan == PAN
                        else approve(m).replace(response_code="05", auth_code=None))
    async with serving(issuer), running_switch(ledger_cfg(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        a = purchase("000011", 1_250)
        assert (await term.request(a)).response_code == "00"
        b = purchase("000012", 900)
        assert (await term.request(b)).response_code == "00"
        assert (await term.request(reversal(b, "000013"))).response_code == "00"
        d = purchase("000014", 100, pan=declined_pan)
        assert (await term.request(d)).response_code == "05"
        await term.aclose()
    assert hold_state(dsn, a) == "pending"
    assert hold_state(dsn, b) == "voided"
    assert hold_state(dsn, d) is None and event_types(dsn, d)[-1] == "declined"
    recv = balance(dsn, LedgerWire.network_receivable("visa", "EUR"))
    assert recv.debits_pending == 1_250
    assert clear(dsn, MAC) == 1
    assert clear(dsn, MAC) == 0  # idempotent
    assert hold_state(dsn, a) == "posted"
    recv = balance(dsn, LedgerWire.network_receivable("visa", "EUR"))
    assert (recv.debits_pending, recv.debits_posted) == (0, 1_250)
    verify_ok(dsn)


@trio_test
async def test_ledger_write_failure_answers_96_and_reverses_at_issuer(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(ledger_cfg(dsn, issuer.port)) as sw:
        real = sw.ledger.writer.submit

        async def broken(*a, **kw):
            raise L.LedgerError("ledger batch not committed: test")
        sw.ledger.writer.submit = broken
        term = await Terminal.connect(sw.ports["pos"])
        r = await term.request(purchase("000021", 1_000))
        assert r.response_code == "96"
        sw.ledger.writer.submit = real
        await issuer.wait_for(lambda: issuer.traffic("042"))
        await term.aclose()
    verify_ok(dsn)


@trio_test
async def test_hold_committed_but_answered_96_is_voided_after_a_restart(dsn):
    """The write commits but the switch never learns it (timeout) and dies before the
    background void: the journal's ledger_void_pending makes the next start void it."""
    issuer = FakeIssuer()
    m = purchase("000025", 600, pan=ONUS_USD).replace(currency="840")
    async with serving(issuer):
        async with running_switch(ledger_cfg(dsn, issuer.port)) as sw:
            real = sw.ledger.writer.submit

            async def lost(*a, **kw):
                await real(*a, **kw)  # committed...
                raise L.LedgerError("ledger batch not committed: test")  # ...unknown
            sw.ledger.writer.submit = lost
            sw.ledger.void_later = lambda key: None  # dies before the background void
            term = await Terminal.connect(sw.ports["pos"])
            assert (await term.request(m)).response_code == "96"
            await term.aclose()
        assert hold_state(dsn, m) == "pending"
        async with running_switch(ledger_cfg(dsn, issuer.port)):
            with trio.fail_after(10):
                while hold_state(dsn, m) != "voided":
                    await trio.sleep(0.1)
    verify_ok(dsn)


@trio_test
async def test_expired_hold_is_voided_by_the_writer(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(
            ledger_cfg(dsn, issuer.port, hold_timeout_s=1)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        m = purchase("000031", 800, pan=ONUS_USD).replace(currency="840")
        assert (await term.request(m)).response_code == "00"
        with trio.fail_after(10):
            while hold_state(dsn, m) != "expired":
                await trio.sleep(0.2)
        await term.aclose()
    token = keyed_pan_token(bytes.fromhex(TOKEN_KEY))(ONUS_USD)
    assert balance(dsn, LedgerWire.cardholder(token, "USD")).debits_pending == 0
    verify_ok(dsn)


@trio_test
async def test_multi_currency_onus_through_fx_positions(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(ledger_cfg(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        # 12.35 USD to a JPY card at 149.5 JPY/USD: 1846.325 -> 1846 JPY (HALF_EVEN)
        jpy = purchase("000041", 1_235, pan=ONUS_JPY).replace(
            currency="840", conversion_rate=Decimal("149.5"), billing_currency="392")
        assert (await term.request(jpy)).response_code == "00"
        # 10.05 USD to a BHD card at 0.376: 3.7788 BHD -> 3.779 (exponent 3)
        bhd = purchase("000042", 1_005, pan=ONUS_BHD).replace(
            currency="840", conversion_rate=Decimal("0.376"))
        assert (await term.request(bhd)).response_code == "00"
        # a DE6 that disagrees with DE4 x DE10 is refused
        bad = purchase("000043", 1_005, pan=ONUS_BHD).replace(
            currency="840", conversion_rate=Decimal("0.376"), billing_amount_minor=3_780)
        assert (await term.request(bad)).response_code == "12"
        # partial completion of the JPY one: 10.00 USD -> 1846 x 1000/1235 = 1494.7 -> 1495
        adv = jpy.replace(mti="0220", stan="000044", amount_minor=1_000,
                          original_data="0200" + jpy.stan + jpy.transmission_time + "0" * 22)
        assert (await term.request(adv)).response_code == "00"
        await term.aclose()
    tok = keyed_pan_token(bytes.fromhex(TOKEN_KEY))
    jcard = balance(dsn, LedgerWire.cardholder(tok(ONUS_JPY), "JPY"))
    assert (jcard.debits_pending, jcard.debits_posted) == (0, 1_495)
    bcard = balance(dsn, LedgerWire.cardholder(tok(ONUS_BHD), "BHD"))
    assert bcard.debits_pending == 3_779
    assert balance(dsn, LedgerWire.fx_position("JPY")).credits_posted == 1_495
    usd_fx = balance(dsn, LedgerWire.fx_position("USD"))
    assert (usd_fx.debits_posted, usd_fx.debits_pending) == (1_000, 1_005)
    assert event_types(dsn, jpy).count("held") == 2
    report = verify_ok(dsn)
    assert report.ledger_balanced


def test_outbox_events_reach_mqtt_and_cli_verify_is_clean(dsn, mqtt_broker):
    host, port = mqtt_broker
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    issuer = FakeIssuer()
    cfg = ledger_cfg(dsn, 0, relay=True, mqtt_host=host, mqtt_port=port, topic_prefix=prefix)

    async def main():
        with trio.fail_after(30):
            async with serving(issuer):
                cfg["links"][0]["port"] = issuer.port
                async with running_switch(cfg) as sw:
                    term = await Terminal.connect(sw.ports["pos"])
                    for i in range(5):
                        m = purchase(f"0001{i:02d}", 100 + i, pan=ONUS_USD).replace(
                            currency="840")
                        assert (await term.request(m)).response_code == "00"
                    assert (await term.request(purchase("000200", 300))).response_code == "00"
                    await term.aclose()
                    with psycopg.connect(dsn) as conn:
                        want = {r[0] for r in conn.execute("select id from events")}
                    deadline = time.monotonic() + 15
                    while {uuid.UUID(m["event_id"]) for m in sub.messages} < want:
                        assert time.monotonic() < deadline, (len(sub.messages), len(want))
                        await trio.sleep(0.05)

    with Subscriber(host, port, prefix) as sub:
        trio.run(main)
    assert len({m["event_id"] for m in sub.messages}) == 6 * 4
    env = {**os.environ, "PAYSWITCH_PG_DSN": dsn}
    out = subprocess.run([sys.executable, "-m", "payswitch.lab.cli", "ledger", "verify",
                          "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["ledger_balanced"] is True


@trio_test
async def test_offus_approval_whose_answer_is_not_journalled_is_reversed_and_voided(dsn):
    """The issuer approves and the hold commits, but the answer's journal write fails:
    the terminal is told 96, so the issuer gets its 0420 and the hold is voided (it
    used to stay pending, for clearing to post a payment its sender was told failed)."""
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(ledger_cfg(dsn, issuer.port)) as sw:
        real_complete = sw.store.complete
        failures = 1

        async def flaky_complete(*args, **kwargs):
            nonlocal failures
            if failures:
                failures -= 1
                raise StoreError("database error OperationalError (sqlstate 08006)")
            return await real_complete(*args, **kwargs)

        sw.store.complete = flaky_complete
        term = await Terminal.connect(sw.ports["pos"])
        m = purchase("000041", 700)
        assert (await term.request(m)).response_code == "96"
        await issuer.wait_for(lambda: issuer.traffic("042"))
        with trio.fail_after(10):
            while hold_state(dsn, m) != "voided":
                await trio.sleep(0.1)
        await term.aclose()
    verify_ok(dsn)


@trio_test
async def test_refused_offus_hold_writes_its_declined_events(dsn):
    """An issuer's approval whose hold the ledger refuses (its id failed before): 96 to
    the terminal, a 0420 to the issuer, no hold, and the payment's events are received,
    routed and declined (response 96, reason ledger), as when they travelled with the
    hold's request as its failure events."""
    issuer = FakeIssuer()
    m = purchase("000051", 800)
    async with serving(issuer), running_switch(ledger_cfg(dsn, issuer.port)) as sw:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("insert into failed_transfers (id, result, ts) values (%s, %s, 1)",
                         (uuid.UUID(int=det_id("hold", dup_key(m))), "overflows_debits"))
        term = await Terminal.connect(sw.ports["pos"])
        assert (await term.request(m)).response_code == "96"
        await issuer.wait_for(lambda: issuer.traffic("042"))
        await term.aclose()
    assert hold_state(dsn, m) is None
    assert event_types(dsn, m) == ["received", "routed", "declined"]
    pid = uuid.UUID(int=LedgerWire.payment_id(dup_key(m)))
    with psycopg.connect(dsn) as conn:
        (payload,) = conn.execute("select payload from events where payment_id = %s "
                                  "and type = 'declined'", (pid,)).fetchone()
    assert json.loads(payload) == {"response_code": "96", "reason": "ledger"}
    verify_ok(dsn)
