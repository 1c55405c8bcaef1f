"""Dynamic key exchange on a link, at the sockets: the Visa network simulator (issuer
token) sends a new ZPK / ZAK in an 0800 key change (TR-31 under the ZMK, KCV), the
switch (switch token) imports it and switches over with PIN transactions in flight,
none failing; the old key stays accepted for the grace period; a bad KCV is refused
(0810 63) and the old key stays."""

from __future__ import annotations

import contextlib
import io
import os

import pytest
import trio
from switchkit import config_dict, running_switch, trio_test

from payswitch.codecs.iso8583.mastercard import parse_de48
from payswitch.hsm import HsmError, devkeys
from payswitch.hsm import keyexchange as kx
from payswitch.hsm.token import DEV_PIN
from payswitch.simulators.cards import card
from payswitch.simulators.network import Faults, NetworkSimulator
from payswitch.simulators.terminal import CardCrypto, Terminal, open_link
from payswitch.switch import logs

PIN_ENV = "PAYSWITCH_TEST_HSM_PIN"


@pytest.fixture(scope="module")
def tokens(hsm, issuer_hsm, terminal_hsm):
    devkeys.load_switch_keys(hsm)
    devkeys.load_issuer_keys(issuer_hsm)
    devkeys.load_terminal_keys(terminal_hsm)
    os.environ[PIN_ENV] = DEV_PIN
    return hsm, issuer_hsm, terminal_hsm


@contextlib.asynccontextmanager
async def topology(dsn, issuer_hsm, *, grace_ms=60_000, faults=None):
    sim = NetworkSimulator("visa", hsm=issuer_hsm, mac=True, seed=7, faults=faults,
                           key_grace_s=grace_ms / 1000)
    cfg = config_dict(dsn, 0, dialect="visa", framing="vap", zpk=devkeys.zpk("visa"),
                      zak=devkeys.zak("visa"), zmk=devkeys.zmk("visa"), mac=True,
                      key_grace_ms=grace_ms, request_timeout_ms=5000)
    cfg["hsm"] = {"token": "switch-test", "pin_env": PIN_ENV}
    cfg["listeners"][0]["pin_key"] = devkeys.TPK
    cfg["terminals"] = [{"id": "TERM0001", "listener": "pos"}]
    async with trio.open_nursery() as n:
        cfg["links"][0]["port"] = await n.start(sim.serve)
        async with running_switch(cfg) as sw, \
                open_link("127.0.0.1", sw.ports["pos"]) as link:
            yield sim, sw, link
        n.cancel_scope.cancel()


def pvv_ok(issuer_hsm, block, pan, pin, zpk) -> bool:
    pvv = issuer_hsm.generate_pvv_clear(devkeys.pvk("visa"), pan, pin)
    try:
        return issuer_hsm.verify_pin_pvv(block, pan, zpk, devkeys.pvk("visa"), pvv)
    except HsmError:
        return False


@trio_test
async def test_key_change_mid_stream_no_pin_transaction_fails(dsn, tokens):
    hsm, issuer_hsm, terminal_hsm = tokens
    log_lines = io.StringIO()
    logs.setup("DEBUG", stream=log_lines)
    term = Terminal("TERM0001", seed=11, crypto=CardCrypto(terminal_hsm))
    ok = card("visa_approve")
    codes: list[str] = []
    changes: dict[str, str] = {}

    async def one() -> None:
        r = await link.request(term.withdrawal(ok, 2000), 15)
        codes.append(r.response.response_code)

    async with topology(dsn, issuer_hsm, faults=Faults(latency_ms=150)) as (sim, sw, link):
        swlink = sw.links["visa"]
        async with trio.open_nursery() as n:
            for i in range(24):
                n.start_soon(one)
                await trio.sleep(0.02)
                if i == 8:
                    changes["ZPK"] = await sim.change_key("ZPK")
                if i == 14:
                    changes["ZAK"] = await sim.change_key("ZAK")
        new_zpk, new_zak = swlink.keys.zpk.current, swlink.keys.zak.current
        after = term.withdrawal(ok, 1000)
        last = (await link.request(after, 15)).response.response_code
        received = sim.requests("0200")[-1]  # the switch sends its own STAN
        mac_failures = sim.stats.mac_failures
        blocks = [kx.parse("visa", m).block for m in map(sim.dialect.decode, sim.sent)
                  if m.network_code == kx.KEY_CHANGE and m.mti == "0800"]
    assert changes == {"ZPK": "00", "ZAK": "00"}
    assert codes == ["00"] * 24
    assert (last, mac_failures) == ("00", 0)
    # both sides moved to the new keys, and they are the same keys (same KCV)
    assert new_zpk != devkeys.zpk("visa") and new_zak != devkeys.zak("visa")
    assert hsm.key_info(new_zpk).kcv == issuer_hsm.key_info(sim.zpk_ring.current).kcv
    assert hsm.key_info(new_zak).kcv == issuer_hsm.key_info(sim.zak_ring.current).kcv
    # after the change the PIN travels under the new ZPK, not the old one
    assert pvv_ok(issuer_hsm, received.pin_block, ok.pan, ok.pin, sim.zpk_ring.current)
    assert not pvv_ok(issuer_hsm, received.pin_block, ok.pan, ok.pin, devkeys.zpk("visa"))
    text = log_lines.getvalue()
    assert "link_key_changed" in text and hsm.key_info(new_zpk).kcv in text
    assert len(blocks) == 2 and not any(b in text for b in blocks)  # labels, KCVs only


async def _answers_under_old_zak(dsn, issuer_hsm, terminal_hsm, grace_ms) -> str:
    """Change the ZAK, then let the network answer under the old one (as a MAC made
    just before its switch-over would be): the code the terminal gets."""
    term = Terminal("TERM0001", seed=12, crypto=CardCrypto(terminal_hsm))
    async with topology(dsn, issuer_hsm, grace_ms=grace_ms) as (sim, sw, link):
        old = sim.zak_ring.current
        assert await sim.change_key("ZAK") == "00"
        # the simulator's answers keep the old ZAK; it accepts the new one
        sim.zak_ring.current, sim.zak_ring.pending = old, sim.zak_ring.current
        r = await link.request(term.purchase(card("visa_approve"), 1000, chip=False), 15)
        return r.response.response_code


@trio_test
async def test_old_zak_accepted_during_grace(dsn, tokens):
    _, issuer_hsm, terminal_hsm = tokens
    assert await _answers_under_old_zak(dsn, issuer_hsm, terminal_hsm, 60_000) == "00"


@trio_test
async def test_old_zak_refused_without_grace(dsn, tokens):
    _, issuer_hsm, terminal_hsm = tokens
    assert await _answers_under_old_zak(dsn, issuer_hsm, terminal_hsm, 0) == "91"


@trio_test
async def test_bad_kcv_is_refused_and_the_old_key_stays(dsn, tokens):
    hsm, issuer_hsm, terminal_hsm = tokens
    term = Terminal("TERM0001", seed=13, crypto=CardCrypto(terminal_hsm))
    ok = card("visa_approve")
    before = {k.label for k in hsm.list_keys()}
    async with topology(dsn, issuer_hsm) as (sim, sw, link):
        code = await sim.change_key("ZPK", bad_kcv=True)
        swlink = sw.links["visa"]
        current = swlink.keys.zpk.current, sim.zpk_ring.current
        msg = term.withdrawal(ok, 2000)
        r = await link.request(msg, 15)
        received = sim.requests("0200")[-1]
    assert code == "63"
    assert current == (devkeys.zpk("visa"), devkeys.zpk("visa"))
    assert r.response.response_code == "00"
    assert pvv_ok(issuer_hsm, received.pin_block, ok.pan, ok.pin, devkeys.zpk("visa"))
    assert {k.label for k in hsm.list_keys()} == before  # nothing imported


@trio_test
async def test_key_change_resent_after_a_lost_0810_is_not_a_second_rotation(
        dsn, tokens, monkeypatch):
    from payswitch.simulators import keychange
    _, issuer_hsm, terminal_hsm = tokens
    term = Terminal("TERM0001", seed=14, crypto=CardCrypto(terminal_hsm))
    real, codes = keychange._exchange, []

    async def first_answer_lost(sim, msg, timeout_s):
        codes.append(await real(sim, msg, timeout_s))
        return "91" if len(codes) == 1 else codes[-1]

    monkeypatch.setattr(keychange, "_exchange", first_answer_lost)
    async with topology(dsn, issuer_hsm) as (sim, sw, link):
        assert await sim.change_key("ZAK") == "00"
        ring = sw.links["visa"].keys.zak
        r = await link.request(term.withdrawal(card("visa_approve"), 2000), 15)
    assert codes == ["00", "00"]
    assert ring.previous == devkeys.zak("visa")  # rotated once: the old key in grace
    assert r.response.response_code == "00"


@trio_test
async def test_switch_rotates_its_keys_mid_stream_no_pin_transaction_fails(dsn, tokens):
    from payswitch.switch.linkkeys import rotate_all
    hsm, issuer_hsm, terminal_hsm = tokens
    term = Terminal("TERM0001", seed=15, crypto=CardCrypto(terminal_hsm))
    ok = card("visa_approve")
    codes: list[str] = []

    async def one() -> None:
        r = await link.request(term.withdrawal(ok, 2000), 15)
        codes.append(r.response.response_code)

    async with topology(dsn, issuer_hsm, faults=Faults(latency_ms=150)) as (sim, sw, link):
        async with trio.open_nursery() as n:
            for i in range(16):
                n.start_soon(one)
                await trio.sleep(0.02)
                if i == 8:
                    rotated = await rotate_all(sw.links)
        keys = sw.links["visa"].keys
        after = term.withdrawal(ok, 1000)
        last = (await link.request(after, 15)).response.response_code
        received = sim.requests("0200")[-1]
        mac_failures = sim.stats.mac_failures
    assert rotated == {"visa": {"ZPK": "00", "ZAK": "00"}}
    assert codes == ["00"] * 16 and (last, mac_failures) == ("00", 0)
    assert hsm.key_info(keys.zpk.current).kcv == issuer_hsm.key_info(sim.zpk_ring.current).kcv
    assert hsm.key_info(keys.zak.current).kcv == issuer_hsm.key_info(sim.zak_ring.current).kcv
    assert pvv_ok(issuer_hsm, received.pin_block, ok.pan, ok.pin, sim.zpk_ring.current)
    assert not pvv_ok(issuer_hsm, received.pin_block, ok.pan, ok.pin, devkeys.zpk("visa"))


@trio_test
async def test_switch_rotation_refused_by_the_network_keeps_the_old_key(dsn, tokens):
    import dataclasses

    from payswitch.switch.linkkeys import LinkKeys
    hsm, issuer_hsm, terminal_hsm = tokens
    term = Terminal("TERM0001", seed=16, crypto=CardCrypto(terminal_hsm))
    before = {k.label for k in hsm.list_keys()}
    async with topology(dsn, issuer_hsm) as (sim, sw, link):
        swlink = sw.links["visa"]
        # a block under another ZMK than the network's: its MAC does not verify there
        wrong = LinkKeys(dataclasses.replace(swlink.cfg, zmk=devkeys.zmk("mastercard")))
        code = await wrong.rotate(swlink, "ZPK")
        r = await link.request(term.withdrawal(card("visa_approve"), 2000), 15)
    assert code == "63"
    assert wrong.zpk.current == swlink.keys.zpk.current == devkeys.zpk("visa")
    assert sim.zpk_ring.current == devkeys.zpk("visa")
    assert r.response.response_code == "00"
    assert {k.label for k in hsm.list_keys()} == before  # the new key was deleted


@trio_test
async def test_mastercard_key_change_in_de48_subelement_11(dsn, tokens):
    hsm, issuer_hsm, terminal_hsm = tokens
    term = Terminal("TERM0001", seed=17, crypto=CardCrypto(terminal_hsm))
    mc = card("mastercard_approve")
    sim = NetworkSimulator("mastercard", hsm=issuer_hsm, seed=8)
    cfg = config_dict(dsn, 0, dialect="mastercard", framing="len2",
                      zpk=devkeys.zpk("mastercard"), zmk=devkeys.zmk("mastercard"),
                      request_timeout_ms=5000)
    cfg["links"][0]["name"] = "mastercard"
    cfg["routes"] = [{"prefix": mc.pan[:1], "link": "mastercard"}]
    cfg["hsm"] = {"token": "switch-test", "pin_env": PIN_ENV}
    cfg["listeners"][0]["pin_key"] = devkeys.TPK
    cfg["terminals"] = [{"id": "TERM0001", "listener": "pos"}]
    async with trio.open_nursery() as n:
        cfg["links"][0]["port"] = await n.start(sim.serve)
        async with running_switch(cfg) as sw, \
                open_link("127.0.0.1", sw.ports["pos"]) as link:
            code = await sim.change_key("ZPK")
            r = await link.request(term.withdrawal(mc, 2000), 15)
            received = sim.requests("0200")[-1]
            zpk = sw.links["mastercard"].keys.zpk.current
        n.cancel_scope.cancel()
    (sent,) = [m for m in map(sim.dialect.decode, sim.sent) if m.mti == "0800"]
    assert "11" in parse_de48(sent.additional_data)[1]  # DE48 subelement 11
    (change,) = [m for m in sim.requests("0810")]
    assert code == change.response_code == "00"
    assert hsm.key_info(zpk).kcv == issuer_hsm.key_info(sim.zpk_ring.current).kcv
    assert r.response.response_code == "00"
    assert pvv_ok(issuer_hsm, received.pin_block, mc.pan, mc.pin, sim.zpk_ring.current)
