"""The acceptance scenario: a business day of approvals through the real switch
(SoftHSM, PostgreSQL, the Visa simulator as issuer), then clearing, the network's
settlement and chargebacks, settlement in the ledger and reconciliation, with faults
injected: one authorization presented twice, a record the network rejects, an amount
the network changes, one chargeback, one hold never presented. The reconciliation
finds exactly those, each to the cent; `payswitch recon` exits 1 until each is
explained; `ledger verify` is clean."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
import trio

import payswitch.ledger as L
from payswitch.codecs import nacha
from payswitch.codecs.clearing import base2
from payswitch.codecs.clearing import chargeback as cbk
from payswitch.hsm import devkeys
from payswitch.hsm.token import DEV_PIN
from payswitch.lab import clearingday
from payswitch.lab.cli import main
from payswitch.simulators.cards import card
from payswitch.simulators.network import NetworkSimulator
from payswitch.simulators.terminal import CardCrypto, Terminal, open_link
from payswitch.switch.clearing_details import hsm_decrypt, journal_details
from tests.switch.switchkit import config_dict, running_switch

PIN_ENV = "PAYSWITCH_TEST_HSM_PIN"
AMOUNTS = (1_000, 2_250, 3_333, 4_100, 5_005, 6_789)


@pytest.fixture(scope="module")
def tokens(hsm, issuer_hsm, terminal_hsm):
    devkeys.load_switch_keys(hsm)
    devkeys.load_issuer_keys(issuer_hsm)
    devkeys.load_terminal_keys(terminal_hsm)
    return hsm, issuer_hsm, terminal_hsm


async def traffic(dsn: str, issuer_hsm, terminal_hsm) -> list[str]:
    cfg = config_dict(dsn, 0, dialect="visa", framing="vap", zpk=devkeys.zpk("visa"),
                      zak=devkeys.zak("visa"), mac=True)
    cfg["hsm"] = {"token": "switch-test", "pin_env": PIN_ENV}
    cfg["listeners"][0]["pin_key"] = devkeys.TPK
    cfg["ledger"] = {"enabled": True, "currencies": ["USD"], "max_wait_ms": 1}
    t = Terminal("TERM0001", seed=11, crypto=CardCrypto(terminal_hsm))
    ok = card("visa_approve")
    sim = NetworkSimulator("visa", hsm=issuer_hsm, mac=True, seed=1)
    codes = []
    async with trio.open_nursery() as n:
        await n.start(sim.serve)
        cfg["links"][0]["port"] = sim.port
        async with running_switch(cfg) as sw, open_link("127.0.0.1", sw.ports["pos"]) as link:
            for amount in AMOUNTS:
                codes.append((await link.request(t.purchase(ok, amount), 10))
                             .response.response_code)
        n.cancel_scope.cancel()
    return codes


def test_a_faulty_day_reconciles_to_exactly_the_injected_faults(
        pg_dsn, tokens, monkeypatch, tmp_path, capsys):
    hsm, issuer_hsm, terminal_hsm = tokens
    monkeypatch.setenv(PIN_ENV, DEV_PIN)
    assert trio.run(traffic, pg_dsn, issuer_hsm, terminal_hsm) == ["00"] * len(AMOUNTS)
    day = datetime.now(UTC).date()

    def mac(data: bytes) -> bytes:
        return hsm.event_mac(devkeys.EVK, data)

    details = journal_details(pg_dsn, hsm_decrypt(hsm, devkeys.DEK))
    out = clearingday.run_day(pg_dsn, mac, day, tmp_path, details=details,
                              faults=clearingday.Faults())
    sent = base2.read((tmp_path / f"visa-{day:%Y%m%d}-001.ctf").read_bytes()).presentments
    arns = [p.arn for p in sent]
    assert [p.amount_minor for p in sent] == [*AMOUNTS, AMOUNTS[0]]  # the duplicate last
    got = sorted((m["cls"], m["arn"], m["currency"], m["amount_minor"], m["explained"])
                 for m in out.recon["mismatches"])
    assert got == sorted([
        ("duplicate_presentment", arns[0], "840", AMOUNTS[0], False),
        ("rejected_by_network", arns[1], "840", AMOUNTS[1], False),
        ("amount_differs", arns[2], "840", 137, False),
        ("authorized_never_presented", "", "840", 4_321, False),
        ("chargeback", arns[5], "840", AMOUNTS[5], True),
    ])
    assert out.recon["ok"] is False
    assert out.verify_ok and out.ledger_balanced
    report = json.loads((tmp_path / f"visa-{day:%Y%m%d}.settlement.json").read_text())
    assert [r["reason"] for r in report["rejected"]] == ["invalid_account", "duplicate_arn"]
    assert out.chargebacks == {arns[5]: "open"}

    # payouts: the merchant gets sales - fees - chargebacks, by ACH (its config)
    accepted = {a["arn"]: a for a in report["accepted"]}
    fees = sum(a["interchange_minor"] + round(a["amount_minor"] * 13 / 10_000)
               + round(a["amount_minor"] * 30 / 10_000) for a in accepted.values())
    sales = AMOUNTS[0] + AMOUNTS[2] + 137 + sum(AMOUNTS[3:])
    assert sum(a["amount_minor"] for a in accepted.values()) == sales
    paid = out.payouts["merchants"]["DEMOMERCHANT001"]
    assert (paid["sales"], paid["fees"], paid["chargebacks"]) == (sales, fees, AMOUNTS[5])
    assert paid["paid"] == sales - fees - AMOUNTS[5] > 0
    ach = nacha.read((tmp_path / f"payouts-{day:%Y%m%d}.ach").read_text())
    assert [(e.amount, e.account) for e in ach.entries()] == [(paid["paid"], "000123456789")]
    assert ach.batches[0].sec_code == "CCD"

    # the CLI finds the same, exits 1 while any is unexplained, 0 once all are
    args = ["recon", "--date", day.isoformat(), "--dir", str(tmp_path), "--dsn", pg_dsn,
            "--json", "--metrics-file", str(tmp_path / "m.prom")]
    assert main(args) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["unexplained"] == 4 and doc["counts"]["duplicate_presentment"] == 1
    assert 'payswitch_recon_mismatches{class="rejected_by_network",explained="false"} 1.0' \
        in (tmp_path / "m.prom").read_text()
    for m in doc["mismatches"]:
        if not m["explained"]:
            assert main(["recon", "--explain", m["key"], "--note", "test", "--dsn",
                         pg_dsn]) == 0
    assert main(args) == 0
    with psycopg.connect(pg_dsn) as conn:
        (n,) = conn.execute("select count(*) from events where type = 'recon_mismatch'"
                            ).fetchone()
    assert n == 5  # recorded once by the day's run; the CLI runs had no MAC


def test_a_returned_payout_restores_the_merchant_payable(pg_dsn, tokens, monkeypatch,
                                                       tmp_path):
    hsm, issuer_hsm, terminal_hsm = tokens
    monkeypatch.setenv(PIN_ENV, DEV_PIN)
    trio.run(traffic, pg_dsn, issuer_hsm, terminal_hsm)
    day = datetime.now(UTC).date()

    def mac(data: bytes) -> bytes:
        return hsm.event_mac(devkeys.EVK, data)

    out = clearingday.run_day(pg_dsn, mac, day, tmp_path,
                              details=journal_details(pg_dsn, hsm_decrypt(hsm, devkeys.DEK)),
                              faults=clearingday.Faults(payout_return=True))
    paid = out.payouts["merchants"]["DEMOMERCHANT001"]["paid"]
    assert out.payouts["returned"] == [{"merchant_id": "DEMOMERCHANT001", "amount_minor": paid,
                                        "reason_code": "R03", "was": "sent"}]
    clearing = clearingday.accounts("payout_clearing", "", 840)
    with psycopg.connect(pg_dsn) as conn:
        (dr, cr) = conn.execute("select debits_posted, credits_posted from accounts"
                                " where id = %s", (uuid.UUID(int=clearing),)).fetchone()
        (state,) = conn.execute("select state from payouts").fetchone()
    assert dr == cr == paid and state == "returned"  # in and out again: back to the merchant
    assert out.verify_ok

    # the whole day again: nothing moves twice, the same findings
    def balances():
        with psycopg.connect(pg_dsn) as conn:
            return conn.execute("select id, debits_posted, credits_posted from accounts"
                                " order by id").fetchall()
    before = balances()
    again = clearingday.run_day(pg_dsn, mac, day, tmp_path,
                                details=journal_details(pg_dsn, hsm_decrypt(hsm, devkeys.DEK)),
                                faults=clearingday.Faults(payout_return=True))
    assert balances() == before and again.recon["counts"] == out.recon["counts"]
    assert again.verify_ok

    # the representment path: the chargeback answered, its money back on the merchant's side
    [arn] = out.chargebacks
    name = clearingday.represent(pg_dsn, mac, day, tmp_path, clearingday.NETWORKS[0], {arn},
                                 evidence="signed receipt")
    second = cbk.read_representments((tmp_path / name).read_bytes(), "visa")
    assert [(c.arn, c.reason_code) for c in second.chargebacks] == [
        (arn, next(iter(cbk.read_base2((tmp_path / f"visa-{day:%Y%m%d}-cb.ctf").read_bytes())
                        .chargebacks)).reason_code)]
    with psycopg.connect(pg_dsn) as conn:
        (state,) = conn.execute("select state from chargebacks where arn = %s",
                                (arn,)).fetchone()
    assert state == "represented"
    with psycopg.connect(pg_dsn) as conn:
        assert L.verify(conn, mac).ok
