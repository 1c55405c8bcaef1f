"""Approvals through the real switch (SoftHSM, PostgreSQL, sockets, the Visa
simulator as issuer) -> `payswitch clearing build` with the switch's details source
(PAN decrypted in the HSM from the journal, merchant data from DE18/DE42/DE43) ->
a Base II file whose presentments carry the cards' PANs; `clearing show` masks them."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources

import psycopg
import pytest
import trio
from switchkit import config_dict, running_switch, trio_test

from payswitch.codecs.clearing import base2
from payswitch.codecs.pan import mask_pan
from payswitch.hsm import devkeys
from payswitch.hsm.token import DEV_PIN, ENV_CONF
from payswitch.lab.cli import main
from payswitch.ledger import LedgerError
from payswitch.ledger.clearing_build import Selected
from payswitch.simulators.cards import card
from payswitch.simulators.network import NetworkSimulator
from payswitch.simulators.terminal import CardCrypto, Terminal, open_link
from payswitch.switch.clearing_details import journal_details, split_de43

PIN_ENV = "PAYSWITCH_TEST_HSM_PIN"


@pytest.fixture(scope="module")
def tokens(hsm, issuer_hsm, terminal_hsm):
    devkeys.load_switch_keys(hsm)
    devkeys.load_issuer_keys(issuer_hsm)
    devkeys.load_terminal_keys(terminal_hsm)
    return hsm, issuer_hsm, terminal_hsm


def switch_config(dsn: str, port: int) -> dict:
    cfg = config_dict(dsn, port, dialect="visa", framing="vap", zpk=devkeys.zpk("visa"),
                      zak=devkeys.zak("visa"), mac=True)
    cfg["hsm"] = {"token": "switch-test", "pin_env": PIN_ENV}
    cfg["listeners"][0]["pin_key"] = devkeys.TPK
    cfg["ledger"] = {"enabled": True, "currencies": ["USD"], "max_wait_ms": 1}
    return cfg


def test_de43_splits_into_name_city_and_alpha3_country():
    assert split_de43("PAYSWITCH DEMO STORE      SPRINGFIELD US") == (
        "PAYSWITCH DEMO STORE", "SPRINGFIELD", "USA")
    assert split_de43("") == ("UNKNOWN", "UNKNOWN", "USA")


@trio_test
async def test_switch_approvals_become_presentments_with_the_cards_pans(
        dsn, tokens, hsm_token, monkeypatch, tmp_path, capsys):
    _, issuer_hsm, terminal_hsm = tokens
    monkeypatch.setenv(PIN_ENV, DEV_PIN)
    t1 = Terminal("TERM0001", seed=7, crypto=CardCrypto(terminal_hsm))
    ok, bad = card("visa_approve"), card("visa_bad_cvv")
    sim = NetworkSimulator("visa", hsm=issuer_hsm, mac=True, seed=1)
    codes = []
    async with trio.open_nursery() as n:
        await n.start(sim.serve)
        async with running_switch(switch_config(dsn, sim.port)) as _sw, \
                open_link("127.0.0.1", _sw.ports["pos"]) as link:
            for msg in (t1.purchase(ok, 1234), t1.purchase(ok, 5600),
                        t1.purchase(bad, 999, chip=False)):
                codes.append((await link.request(msg, 10)).response.response_code)
        n.cancel_scope.cancel()
    assert codes == ["00", "00", "82"]

    today = datetime.now(UTC).date()
    for var, value in ((ENV_CONF, hsm_token.conf), ("PAYSWITCH_HSM_TOKEN", hsm_token.label),
                       ("PAYSWITCH_HSM_PIN", DEV_PIN), ("PAYSWITCH_PG_DSN", dsn),
                       ("PAYSWITCH_PAN_DEK_LABEL", devkeys.DEK)):
        monkeypatch.setenv(var, value)
    rc = main(["clearing", "build", "--date", today.isoformat(), "--out", str(tmp_path),
               "--details", "payswitch.switch.clearing_details:details",
               "--network", "visa=base2:400000"])
    built = capsys.readouterr()
    assert rc == 0, built.err
    path = tmp_path / f"visa-{today:%Y%m%d}-001.ctf"
    f = base2.read(path.read_bytes())
    assert sorted((p.pan, p.amount_minor) for p in f.presentments) == [
        (ok.pan, 1234), (ok.pan, 5600)]  # the decline is not presented
    p = f.presentments[0]
    assert (p.mcc, p.merchant_name, p.merchant_city, p.merchant_country) == (
        "5411", "PAYSWITCH DEMO STORE", "SPRINGFIELD", "USA")

    assert main(["clearing", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert mask_pan(ok.pan) in shown and "5600" in shown
    assert ok.pan not in shown + built.out + built.err


def test_a_payment_without_a_journal_pan_is_an_error(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(resources.files("payswitch.switch").joinpath("schema.sql").read_text())
    row = Selected(12345, 1, "visa", 1, "sale", 100, None, 840, "A1", datetime.now(UTC).date(),
                   "7" * 23, "")
    with pytest.raises(LedgerError, match="without a journal PAN"):
        journal_details(pg_dsn, lambda blob, aad: "never")([row])
