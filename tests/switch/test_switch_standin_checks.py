"""Stand-in card checks at the sockets: the Visa issuer is unreachable, the switch
stands in and checks PIN (PVV on track 2), CVV / iCVV (track 2) and ARQC (DE55) with
the issuer's keys in its own token (shared by key ceremony, by label). Bytes in from a
terminal with real PIN blocks, CVVs and ARQCs; DE39 out; the journal's ``standin`` row
says which checks were done."""

from __future__ import annotations

import os
import warnings
from datetime import UTC, datetime

import psycopg
import pytest
from pyemv.cvn import VisaCVN10
from switchkit import running_switch, trio_test
from test_switch_hsm_e2e import PIN_ENV, switch_config

from payswitch.codecs.tlv import decode_tlv
from payswitch.hsm import devkeys, emv
from payswitch.hsm.token import DEV_PIN
from payswitch.lab.realparts import free_port
from payswitch.ledger.clearing_build import Selected
from payswitch.simulators.cards import card
from payswitch.simulators.terminal import CardCrypto, Terminal, open_link
from payswitch.switch.clearing_details import journal_details
from payswitch.switch.config import ConfigError, parse
from payswitch.switch.ledgerwire import det_id
from payswitch.switch.participants.cardchecks import check_standin_keys

GRANT_ALL = {"card_checks": ["pvv", "cvv", "arqc"], "pvk": devkeys.pvk("visa"),
             "cvk": devkeys.cvk("visa"), "mkac": devkeys.mkac("visa")}
LIMITS = {"max_daily_count": 50, "max_daily_amount_minor": 10**6,
          "max_single_amount_minor": 10**5, "processing_codes": ["00", "01"]}


@pytest.fixture(scope="module")
def tokens(hsm, terminal_hsm):
    devkeys.load_switch_keys(hsm)
    devkeys.load_standin_keys(hsm, ("visa",))  # what the Visa issuer grants
    devkeys.load_terminal_keys(terminal_hsm)
    os.environ[PIN_ENV] = DEV_PIN
    return hsm, terminal_hsm


def standin_config(dsn: str, **grant) -> dict:
    """The Visa link points at a port nobody listens on: every route is down."""
    cfg = switch_config(dsn, free_port())
    cfg["routing"] = {"ranges": [{"prefix": "4", "routes": [{"link": "visa"}]}],
                      "standin": {"4": {**LIMITS, **grant}}}
    return cfg


async def answers(cfg: dict, msgs: dict) -> dict:
    codes = {}
    async with running_switch(cfg, wait_signed_on=False) as sw, \
            open_link("127.0.0.1", sw.ports["pos"]) as link:
        for name, msg in msgs.items():
            codes[name] = (await link.request(msg, 10)).response
    return codes


def standin_rows(dsn: str) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "select fields from switch_journal where event = 'standin' order by id")]


@trio_test
async def test_good_card_approved_in_stand_in_after_pin_cvv_and_arqc_with_issuer_keys(
        dsn, tokens):
    hsm, terminal_hsm = tokens
    t = Terminal("TERM0001", seed=11, crypto=CardCrypto(terminal_hsm))
    ok = card("visa_approve")  # CVN 10
    atm = t.withdrawal(ok, 4000, chip=True)  # PIN, chip track 2 (iCVV), DE55
    swipe = t.purchase(card("visa_approve_2"), 1500, chip=False)  # magstripe CVV, PIN
    resp = await answers(standin_config(dsn, **GRANT_ALL), {"atm": atm, "swipe": swipe})
    assert resp["atm"].response_code == "00" and resp["atm"].auth_code.startswith("S")
    assert resp["swipe"].response_code == "00"
    rows = standin_rows(dsn)
    assert [r["checks"] for r in rows] == [{"pvv": "ok", "cvv": "ok", "arqc": "ok"},
                                           {"pvv": "ok", "cvv": "ok"}]
    assert [r["response_code"] for r in rows] == ["00", "00"]
    # the ARPC the issuer's MK-AC makes (method 1, ARC 00), for the card to check, as
    # pyemv computes it from the clear TEST key (not our own HSM's derivation)
    req_tags = {x.tag_hex: x.value for x in decode_tlv(atm.emv)}
    assert emv.cvn_of(req_tags) == 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = devkeys.TEST_KEYS[devkeys.mkac("visa")].clear
        arpc = VisaCVN10(iss_mk_ac=k, iss_mk_smi=k, iss_mk_smc=k, pan=ok.pan,
                         psn="01").generate_arpc(tag_9f26=req_tags["9F26"], arpc_rc=b"00")
    tags = {x.tag_hex: x.value for x in decode_tlv(resp["atm"].emv)}
    assert tags["91"] == arpc + b"00"
    # never sent, yet presentable: clearing finds its PAN on the advice's SAF row
    with psycopg.connect(dsn) as conn:
        keys = [r[0] for r in conn.execute(
            "select dup_key from switch_journal where event = 'standin' order by id")]
    rows = [Selected(det_id("payment", k), 1, "visa", 1, "sale", 100, None, 840, "S1",
                     datetime.now(UTC).date(), "7" * 23, "") for k in keys]
    found = journal_details(dsn, lambda blob, aad: hsm.decrypt_pan(devkeys.DEK, blob, aad))(
        rows)
    assert sorted(d.pan for d in found.values()) == sorted([ok.pan, card("visa_approve_2").pan])
    assert {d.mcc for d in found.values()} == {"6011", "5411"}


@trio_test
async def test_a_failed_check_declines_in_stand_in_with_its_code(dsn, tokens):
    _, terminal_hsm = tokens
    t = Terminal("TERM0001", seed=12, crypto=CardCrypto(terminal_hsm))
    resp = await answers(standin_config(dsn, **GRANT_ALL), {
        "pin": t.withdrawal(card("visa_wrong_pin"), 2000),
        "cvv": t.purchase(card("visa_bad_cvv"), 1000, chip=False),
        "arqc": t.purchase(card("visa_bad_arqc"), 1000, chip=True),
        # outside the limits: 91 before any check (no PIN verification spent on it)
        "over": t.withdrawal(card("visa_wrong_pin"), LIMITS["max_single_amount_minor"] + 1)})
    assert {k: r.response_code for k, r in resp.items()} == {
        "pin": "55", "cvv": "82", "arqc": "82", "over": "91"}
    assert all(r.auth_code is None for r in resp.values())
    rows = standin_rows(dsn)
    assert [(r["reason"], r["response_code"]) for r in rows] == [
        ("card_check_pvv", "55"), ("card_check_cvv", "82"), ("card_check_arqc", "82"),
        ("max_single_amount", "91")]
    assert "checks" not in rows[3]
    assert rows[2]["checks"] == {"pvv": "ok", "cvv": "ok", "arqc": "failed"}
    with psycopg.connect(dsn) as conn:  # nothing approved: no advice to send
        assert conn.execute("select count(*) from switch_saf").fetchone()[0] == 0


@trio_test
async def test_a_check_not_granted_is_skipped_and_required_checks_refuse_with_91(
        dsn, tokens):
    _, terminal_hsm = tokens
    t = Terminal("TERM0001", seed=13, crypto=CardCrypto(terminal_hsm))
    cvv_only = {"card_checks": ["cvv"], "cvk": devkeys.cvk("visa")}
    # the PIN is wrong, but the PVV check is not granted: it is not looked at
    strict = await answers(standin_config(dsn, **cvv_only, require_card_checks=True),
                           {"a": t.withdrawal(card("visa_wrong_pin"), 2000, chip=True)})
    lenient = await answers(standin_config(dsn, **cvv_only, require_card_checks=False),
                            {"a": t.withdrawal(card("visa_wrong_pin"), 2000, chip=True)})
    assert strict["a"].response_code == "91" and lenient["a"].response_code == "00"
    skipped = {"pvv": "not_granted", "cvv": "ok", "arqc": "not_granted"}
    assert [(r["reason"], r["checks"]) for r in standin_rows(dsn)] == [
        ("card_checks", skipped), ("approved", skipped)]


def test_card_check_config_is_refused_at_start_with_the_key_named(tokens):
    hsm, _ = tokens
    bad = [({"card_checks": ["pvv"]}, "routing.standin.4.pvk"),
           ({"card_checks": ["cvc"]}, "routing.standin.4.card_checks"),
           ({"card_checks": ["cvv"], "cvk": "cvk.visa", "mkac": "mkac.visa"},
            "routing.standin.4.mkac"),
           ({"check_decline_code": "59"}, "routing.standin.4.check_decline_code")]
    for grant, key in bad:
        with pytest.raises(ConfigError, match=f"^{key}:"):
            parse(standin_config("dbname=x", **grant))
    no_hsm = standin_config("dbname=x", **GRANT_ALL)
    del no_hsm["hsm"]
    no_hsm["links"][0].update(zpk="", zak="", mac=False)
    with pytest.raises(ConfigError, match="^routing.standin.4.card_checks:"):
        parse(no_hsm)
    # keys named but absent from the token, or of another type: refused at start
    for grant, key in (({"card_checks": ["cvv"], "cvk": "cvk.nobody"}, "cvk"),
                       ({"card_checks": ["cvv"], "cvk": devkeys.pvk("visa")}, "cvk")):
        with pytest.raises(ConfigError, match=f"^routing.standin.4.{key}:"):
            check_standin_keys(parse(standin_config("dbname=x", **grant)), hsm)
    check_standin_keys(parse(standin_config("dbname=x", **GRANT_ALL)), hsm)
