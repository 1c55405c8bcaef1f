"""Terminal -> switch -> Visa simulator acting as issuer, three SoftHSM tokens (terminal,
switch, issuer), real sockets and PostgreSQL, in one trio loop: PIN translation seen
from the issuer, PVV / CVV / CVV2 / ARQC checks, ARPC back to the terminal, DUKPT,
link MACs both ways and a tampered one, nothing secret in the journal or the logs."""

from __future__ import annotations

import contextlib
import io
import os

import psycopg
import pytest
import trio
from switchkit import config_dict, running_switch, trio_test

from payswitch.codecs.pan import mask_pan
from payswitch.codecs.tlv import decode_tlv
from payswitch.hsm import HsmError, devkeys, emv
from payswitch.hsm.token import DEV_PIN
from payswitch.simulators.cards import card
from payswitch.simulators.certify import Context as CertifyContext
from payswitch.simulators.certify import run_scenarios
from payswitch.simulators.network import Faults, NetworkSimulator
from payswitch.simulators.terminal import CardCrypto, Terminal, open_link
from payswitch.switch import logs
from payswitch.switch.journal import Store, pan_aad
from payswitch.switch.messages import reversal_item

PIN_ENV = "PAYSWITCH_TEST_HSM_PIN"


@pytest.fixture(scope="module")
def tokens(hsm, issuer_hsm, terminal_hsm):
    devkeys.load_switch_keys(hsm)
    devkeys.load_issuer_keys(issuer_hsm)
    devkeys.load_terminal_keys(terminal_hsm)
    os.environ[PIN_ENV] = DEV_PIN
    return hsm, issuer_hsm, terminal_hsm


def switch_config(dsn: str, port: int, *, mac: bool = True) -> dict:
    cfg = config_dict(dsn, port, dialect="visa", framing="vap", zpk=devkeys.zpk("visa"),
                      zak=devkeys.zak("visa"), mac=mac)
    cfg["hsm"] = {"token": "switch-test", "pin_env": PIN_ENV}
    cfg["listeners"][0]["pin_key"] = devkeys.TPK
    cfg["terminals"] = [
        {"id": "TERM0001", "listener": "pos"},  # the listener's TPK
        {"id": "TERM0002", "listener": "pos", "pin_key": devkeys.BDK, "pin_mode": "dukpt"},
    ]
    return cfg


@contextlib.asynccontextmanager
async def topology(dsn, issuer_hsm, faults: Faults | None = None):
    sim = NetworkSimulator("visa", hsm=issuer_hsm, mac=True, seed=1, faults=faults)
    async with trio.open_nursery() as n:
        await n.start(sim.serve)
        async with running_switch(switch_config(dsn, sim.port)) as sw, \
                open_link("127.0.0.1", sw.ports["pos"]) as link:
            yield sim, sw, link
        n.cancel_scope.cancel()


def issuer_sees_pin(issuer_hsm, block: bytes, pan: str, pin: str) -> bool:
    pvv = issuer_hsm.generate_pvv_clear(devkeys.pvk("visa"), pan, pin)
    return issuer_hsm.verify_pin_pvv(block, pan, devkeys.zpk("visa"), devkeys.pvk("visa"), pvv)


@trio_test
async def test_pin_cvv_arqc_checked_by_the_issuer_arpc_back(dsn, tokens):
    _, issuer_hsm, terminal_hsm = tokens
    log_lines = io.StringIO()
    logs.setup("DEBUG", stream=log_lines)
    t1 = Terminal("TERM0001", seed=1, crypto=CardCrypto(terminal_hsm))
    t2 = Terminal("TERM0002", seed=2, crypto=CardCrypto(terminal_hsm, dukpt=True))
    ok = card("visa_approve")
    codes = {}
    async with topology(dsn, issuer_hsm) as (sim, sw, link):
        atm = t1.withdrawal(ok, 4000, chip=True)
        r = await link.request(atm, 10)
        codes["atm_chip"] = r.response.response_code
        resp_emv = r.response.emv
        (received,) = [m for m in sim.requests("0200") if m.pan == ok.pan]
        for name, msg in (
            ("dukpt", t2.withdrawal(ok, 2000)),
            ("wrong_pin", t1.withdrawal(card("visa_wrong_pin"), 2000)),
            ("bad_cvv", t1.purchase(card("visa_bad_cvv"), 1000, chip=False)),
            ("bad_arqc", t1.purchase(card("visa_bad_arqc"), 1000, chip=True)),
            ("keyed_ok", t1.keyed_purchase(ok, 1500)),
            ("bad_cvv2", t1.keyed_purchase(card("visa_bad_cvv2"), 1500)),
            *((f"tries_{i}", t1.withdrawal(card("visa_pin_tries"), 2000)) for i in (1, 2, 3)),
        ):
            codes[name] = (await link.request(msg, 10)).response.response_code
        assert sim.stats.mac_failures == 0
    assert codes == {"atm_chip": "00", "dukpt": "00", "wrong_pin": "55", "bad_cvv": "82",
                     "bad_arqc": "82", "keyed_ok": "00", "bad_cvv2": "N7", "tries_1": "55",
                     "tries_2": "55", "tries_3": "75"}
    # The issuer got the PIN under its ZPK, not the terminal's TPK block.
    assert received.pin_block != atm.pin_block
    assert issuer_sees_pin(issuer_hsm, received.pin_block, ok.pan, ok.pin)
    assert received.mac is not None and 62 not in received.other
    # ARPC (method 1, ARC 00) in tag 91 of the DE55 the terminal got back.
    tags = {t.tag_hex: t.value for t in decode_tlv(resp_emv)}
    req_tags = {t.tag_hex: t.value for t in decode_tlv(atm.emv)}
    arpc = terminal_hsm.generate_arpc(devkeys.mkac("visa"), ok.pan, "01",
                                      emv.atc_of(req_tags), req_tags["9F26"], b"00",
                                      cvn=emv.cvn_of(req_tags), un=req_tags["9F37"])
    assert tags["91"] == arpc + b"00"
    # Nothing secret at rest or in the logs.
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select j::text from switch_journal j").fetchall()
        rows += conn.execute("select s::text from switch_saf s").fetchall()
    dump = "\n".join(r[0] for r in rows) + log_lines.getvalue()
    for secret in (ok.pan, atm.pin_block.hex(), atm.pin_block.hex().upper(),
                   received.pin_block.hex().upper(), atm.track2):
        assert secret not in dump
    assert mask_pan(ok.pan) in dump  # the masked PAN is there (so the check is real)
    assert "request_done" in log_lines.getvalue()


@trio_test
async def test_tampered_link_mac_is_dropped_and_the_request_times_out(dsn, tokens):
    _, issuer_hsm, terminal_hsm = tokens
    t1 = Terminal("TERM0001", seed=3, crypto=CardCrypto(terminal_hsm))
    async with topology(dsn, issuer_hsm, Faults(bad_mac_rate=1.0)) as (sim, sw, link):
        r = await link.request(t1.purchase(card("visa_approve"), 1000), 10)
        failures = sw.metrics.link_mac_failures.labels("visa")._value.get()
        assert sim.stats.bad_macs_sent >= 1
    assert r.response.response_code == "91"
    assert failures >= 1


@trio_test
async def test_saf_reversal_carries_de2_again_from_the_encrypted_pan(dsn, tokens):
    hsm, issuer_hsm, terminal_hsm = tokens
    silent = card("visa_no_answer")
    t1 = Terminal("TERM0001", seed=4, crypto=CardCrypto(terminal_hsm))
    async with topology(dsn, issuer_hsm) as (sim, sw, link):
        r = await link.request(t1.withdrawal(silent, 2000), 10)
        with trio.fail_after(10):
            while not sim.requests("0420", "0421"):
                await trio.sleep(0.05)
    assert r.response.response_code == "91"
    (rev, *_) = sim.requests("0420", "0421")
    assert rev.pan == silent.pan  # DE2 rebuilt from the HSM-encrypted copy
    with psycopg.connect(dsn) as conn:
        dup_key, token, blob, text = conn.execute(
            "select dup_key, pan_token, pan_enc, s::text from switch_saf s").fetchone()
    assert silent.pan not in text and blob is not None
    assert token == hsm.pan_token(devkeys.TKN, silent.pan)
    assert hsm.decrypt_pan(devkeys.DEK, bytes(blob), pan_aad(dup_key)) == silent.pan
    with pytest.raises(HsmError):  # bound to its payment: another row's identity fails
        hsm.decrypt_pan(devkeys.DEK, bytes(blob), pan_aad(dup_key + "x"))


@trio_test
async def test_crash_recovery_0420_keeps_the_encrypted_pan_and_schema_is_idempotent(
        dsn, tokens):
    hsm = tokens[0]
    store = Store(dsn, pool_size=1)
    try:
        await store.migrate()
        await store.migrate()  # every start runs it: must be idempotent
        req = card("visa_approve")
        msg = Terminal("TERM0001", seed=5).purchase(req, 1000, chip=False)
        key = "T:TERM0001|0200|" + msg.stan
        assert (await store.claim(key, "T:TERM0001", msg)).owner
        blob = hsm.encrypt_pan(devkeys.DEK, req.pan, pan_aad(key))
        await store.append("issuer_request", msg, source="T:TERM0001", link="visa",
                           dup_key=key, pan=("tok", blob))
        assert await store.recover(reversal_item, 3600) == 1  # as after a kill -9
    finally:
        store.close()
    with psycopg.connect(dsn) as conn:
        (enc,) = conn.execute("select pan_enc from switch_saf where dup_key = %s",
                              (key,)).fetchone()
    assert hsm.decrypt_pan(devkeys.DEK, bytes(enc), pan_aad(key)) == req.pan


@trio_test
async def test_certify_wrong_pin_scenario_with_real_pin_blocks(dsn, tokens):
    _, issuer_hsm, terminal_hsm = tokens
    names = ["approval_atm_withdrawal", "decline_55_wrong_pin", "approval_visa"]
    async with topology(dsn, issuer_hsm) as (sim, sw, _link):
        ctx = CertifyContext("127.0.0.1", sw.ports["pos"], terminal_id="TERM0001",
                             timeout_s=10, hsm=terminal_hsm)
        results = await run_scenarios(ctx, names)
    assert [r["passed"] for r in results] == [True] * 3, results
