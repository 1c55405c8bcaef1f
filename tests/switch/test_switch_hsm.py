"""The switch's HSM wiring with a real SoftHSM token: PIN translation (TPK, TDES DUKPT)
to the link's ZPK, HSM errors as DE39 codes, and the [hsm] / key configuration."""

from __future__ import annotations

import os

import pytest
from switchkit import FakeIssuer, Terminal, config_dict, running_switch, serving, trio_test

from payswitch.codecs.iso8583 import Message
from payswitch.hsm import devkeys
from payswitch.hsm.token import DEV_PIN
from payswitch.switch.config import ConfigError, parse
from payswitch.switch.server import Switch

PAN = "4761739001010010"
PIN = "4321"
KSN = bytes.fromhex("FFFF9876543210E00003")
PIN_ENV = "PAYSWITCH_TEST_HSM_PIN"


@pytest.fixture(scope="module")
def keys(hsm, issuer_hsm, terminal_hsm):
    devkeys.load_switch_keys(hsm)
    devkeys.load_issuer_keys(issuer_hsm)
    devkeys.load_terminal_keys(terminal_hsm)
    os.environ[PIN_ENV] = DEV_PIN  # the switch reads its token PIN from the env only
    return hsm, issuer_hsm, terminal_hsm


def hsm_config(dsn: str, port: int, calls: str = "inline", **terminal) -> dict:
    cfg = config_dict(dsn, port, zpk=devkeys.zpk("visa"))
    cfg["hsm"] = {"token": "switch-test", "pin_env": PIN_ENV, "calls": calls}
    cfg["terminals"] = [{"id": "TERM0001", "listener": "pos", "pin_key": devkeys.TPK,
                         **terminal}]
    return cfg


def atm(pin_block: bytes, stan: str = "000001", **kw) -> Message:
    return Message(mti="0200", pan=PAN, processing_code="011000", amount_minor=2000,
                   transmission_time="1125120000", stan=stan, local_time="120000",
                   local_date="1125", pos_entry_mode="021", terminal_id="TERM0001",
                   merchant_id="MERCHANT0000001", currency="840", pin_block=pin_block, **kw)


def issuer_sees_pin(issuer_hsm, block: bytes, pin: str) -> bool:
    """The issuer's own check: the block under ITS ZPK verifies against a PVV of ``pin``."""
    pvv = issuer_hsm.generate_pvv_clear(devkeys.pvk("visa"), PAN, pin)
    return issuer_hsm.verify_pin_pvv(block, PAN, devkeys.zpk("visa"), devkeys.pvk("visa"), pvv)


@pytest.mark.parametrize("calls", ["inline", "thread"])
@trio_test
async def test_tpk_pin_block_is_translated_to_the_link_zpk(dsn, keys, calls):
    hsm, issuer_hsm, terminal_hsm = keys
    block = terminal_hsm.encrypt_pin(devkeys.TPK, PIN, PAN)
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(hsm_config(dsn, issuer.port, calls=calls),
                                               ) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        resp = await term.request(atm(block))
        await term.aclose()
    assert resp.response_code == "00"
    (out,) = issuer.traffic("0200")
    assert out.pin_block != block and len(out.pin_block) == 8
    assert issuer_sees_pin(issuer_hsm, out.pin_block, PIN)
    assert not issuer_sees_pin(issuer_hsm, out.pin_block, "1234")


@trio_test
async def test_dukpt_terminal_ksn_in_de62_is_not_forwarded(dsn, keys):
    hsm, issuer_hsm, terminal_hsm = keys
    block = terminal_hsm.dukpt_encrypt_pin(devkeys.BDK, KSN, PIN, PAN)
    issuer = FakeIssuer()
    cfg = hsm_config(dsn, 0, pin_key=devkeys.BDK, pin_mode="dukpt")
    async with serving(issuer):
        cfg["links"][0]["port"] = issuer.port
        async with running_switch(cfg) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            ok = await term.request(atm(block, other={62: KSN.hex().upper()}))
            no_ksn = await term.request(atm(block, stan="000002"))
            await term.aclose()
    assert (ok.response_code, no_ksn.response_code) == ("00", "81")
    (out,) = issuer.traffic("0200")
    assert 62 not in out.other
    assert issuer_sees_pin(issuer_hsm, out.pin_block, PIN)


@trio_test
async def test_garbage_pin_block_is_81_and_missing_key_is_96(dsn, keys):
    issuer = FakeIssuer()
    cfg = hsm_config(dsn, 0)
    cfg["terminals"].append({"id": "TERM0002", "listener": "pos"})  # no PIN key
    cfg["terminals"].append({"id": "TERM0003", "listener": "pos", "pin_key": "tpk.gone"})
    async with serving(issuer):
        cfg["links"][0]["port"] = issuer.port
        async with running_switch(cfg) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            bad = await term.request(atm(bytes(8)))  # decrypts to no valid format 0 block
            good_block = keys[2].encrypt_pin(devkeys.TPK, PIN, PAN)
            nokey = await term.request(atm(good_block, stan="000002").replace(
                terminal_id="TERM0002"))
            gone = await term.request(atm(good_block, stan="000003").replace(
                terminal_id="TERM0003"))  # KeyNotFoundError from the token
            await term.aclose()
    assert (bad.response_code, nokey.response_code, gone.response_code) == ("81", "96", "96")
    assert issuer.traffic("0200") == []


def test_hsm_errors_map_to_response_codes():
    from payswitch.hsm import HsmBusyError, HsmDeviceError, KeyUsageError, PinBlockError
    from payswitch.switch.errors import response_code_for

    assert response_code_for(PinBlockError("x")) == "81"
    for e in (HsmBusyError("x"), HsmDeviceError("x"), KeyUsageError("x")):
        assert response_code_for(e) == "96"


def test_config_hsm_keys(dsn):
    base = hsm_config(dsn, 1)
    parse(base)
    for bad in ({"pin_mode": "clear"},):
        cfg = hsm_config(dsn, 1, **bad)
        with pytest.raises(ConfigError, match="pin_mode"):
            parse(cfg)
    cfg = hsm_config(dsn, 1, calls="process")
    with pytest.raises(ConfigError, match="hsm.calls"):
        parse(cfg)
    cfg = hsm_config(dsn, 1)
    cfg["links"][0]["mac"] = True
    with pytest.raises(ConfigError, match="zak"):
        parse(cfg)
    cfg["links"][0]["mac"] = "yes"
    with pytest.raises(ConfigError, match="true or false"):
        parse(cfg)
    cfg = hsm_config(dsn, 1)
    del cfg["hsm"]
    with pytest.raises(ConfigError, match=r"\[hsm\]"):
        parse(cfg)
    cfg = hsm_config(dsn, 1)
    cfg["hsm"]["pin"] = "1234"  # secrets never in the file
    with pytest.raises(ConfigError, match="unknown key"):
        parse(cfg)


def test_switch_without_hsm_pin_in_env_refuses_to_start(dsn, monkeypatch, keys):
    monkeypatch.delenv(PIN_ENV)
    sw = Switch(parse(hsm_config(dsn, 1)))
    with pytest.raises(ConfigError, match=PIN_ENV):
        sw._open_hsm()



@trio_test
async def test_ledger_events_macd_and_cardholders_keyed_by_the_hsm(dsn, keys, monkeypatch):
    import psycopg
    from switchkit import purchase

    import payswitch.ledger as L
    from payswitch.simulators.cards import with_luhn
    from payswitch.switch.ledgerwire import LedgerWire

    monkeypatch.delenv("PAYSWITCH_EVENT_MAC_KEY", raising=False)  # the HSM's, not env's
    monkeypatch.delenv("PAYSWITCH_PAN_TOKEN_KEY", raising=False)
    hsm = keys[0]
    onus_pan = with_luhn("999001000000002")
    issuer = FakeIssuer()
    async with serving(issuer):
        cfg = hsm_config(dsn, issuer.port)
        cfg["ledger"] = {"enabled": True, "currencies": ["USD", "EUR"]}
        cfg["onus"] = [{"prefix": "999001", "currency": "USD"}]
        async with running_switch(cfg) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            onus = purchase("000001", 700, pan=onus_pan).replace(currency="840")
            assert (await term.request(onus)).response_code == "00"
            assert (await term.request(purchase("000002", 900))).response_code == "00"
            await term.aclose()
    token = hsm.pan_token(devkeys.TKN, onus_pan)
    with L.Ledger(dsn) as led:
        (card,) = led.lookup_accounts([LedgerWire.cardholder(token, "USD")])
    assert card.debits_pending == 700
    with psycopg.connect(dsn) as conn:
        report = L.verify(conn, lambda data: hsm.event_mac(devkeys.EVK, data))
        assert report.ok and report.ledger_balanced, report.to_text()
        other = L.verify(conn, L.hmac_sha256(b"not the hsm key 0123456789"))
        assert not other.ok  # the chain was MACed in the token, with evk.ledger
    import json
    import subprocess
    import sys

    tok = hsm.config
    env = {**os.environ, "PAYSWITCH_PG_DSN": dsn, "SOFTHSM2_CONF": tok.conf,
           "PAYSWITCH_HSM_TOKEN": tok.label, "PAYSWITCH_HSM_PIN": tok.pin}
    out = subprocess.run([sys.executable, "-m", "payswitch.lab.cli", "ledger", "verify",
                          "--json", "--mac-provider",
                          "payswitch.switch.ledgerwire:hsm_mac_provider"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert json.loads(out.stdout)["ledger_balanced"] is True
