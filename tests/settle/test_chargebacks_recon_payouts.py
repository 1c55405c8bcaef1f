"""Chargebacks against their originals and the representment path, reconciliation
classes not in the acceptance day (chargeback without original, settled amount not
as expected), and ISO 20022 payouts validated against the official XSDs."""

from __future__ import annotations

import time
from datetime import date, datetime

import psycopg
import pytest

from payswitch.codecs import iso20022
from payswitch.codecs.clearing import base2
from payswitch.ledger import Ledger, verify
from payswitch.ledger import chargebacks as C
from payswitch.ledger import payouts as P
from payswitch.ledger import recon as R
from payswitch.ledger.clearing_build import Network, build
from payswitch.simulators.chargebacks import report_dict, settle_day
from tests.clearing import ledgerkit as kit
from tests.settle.test_settlement import accounts, balance, ids

D = date(2026, 11, 27)
VISA = Network("visa", "base2", "412345")


def day_with(pg_dsn, tmp_path, amounts):
    clock = kit.Clock(datetime(2026, 11, 27, 10))
    with Ledger(pg_dsn, mac=kit.MAC, clock_ns=clock, migrate=True) as led:
        kit.setup_accounts(led)
        for pid, amount in enumerate(amounts, start=1):
            kit.authorize(led, pid, amount)
            kit.post(led, pid)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        build(conn, [VISA], D, tmp_path, kit.details())
    data = (tmp_path / "visa-20261127-001.ctf").read_bytes()
    return base2.read(data), data


def test_chargeback_moves_merchant_liability_once_and_representment_moves_it_back(
        pg_dsn, tmp_path):
    f, _ = day_with(pg_dsn, tmp_path, [5_000, 700])
    arn = f.presentments[0].arn
    cb = C.Incoming("visa", arn, 5_000, 840, "83")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, \
            Ledger(pg_dsn, mac=kit.MAC) as led:
        payable, receivable = balance(led, kit.MERCHANT), balance(led, kit.NET["visa"])
        assert C.record(conn, led, cb, accounts=accounts, ids=ids) == "open"
        assert C.record(conn, led, cb, accounts=accounts, ids=ids) == "open"  # once
        assert balance(led, kit.MERCHANT) == payable + 5_000  # the merchant owes it
        assert balance(led, kit.NET["visa"]) == receivable - 5_000
        orphan = C.Incoming("visa", "7" * 23, 999, 840, "30")
        assert C.record(conn, led, orphan, accounts=accounts, ids=ids) == "unmatched"
        assert C.represent(conn, led, arn, accounts=accounts, ids=ids,
                           evidence="signed receipt") == "represented"
        assert balance(led, kit.MERCHANT) == payable
        assert balance(led, kit.NET["visa"]) == receivable
        with pytest.raises(Exception, match="no matched chargeback"):
            C.represent(conn, led, "7" * 23, accounts=accounts, ids=ids)
        res = R.reconcile(conn, D, {"visa": [f]}, {}, now_ns=time.time_ns())
        got = {(m.cls, m.arn, m.amount_minor, m.explained) for m in res.mismatches}
        assert got == {("chargeback_without_original", "7" * 23, 999, False),
                       ("chargeback", arn, 5_000, True)}
        assert not res.ok
    with psycopg.connect(pg_dsn) as conn:
        assert verify(conn, kit.MAC).ok


def test_a_net_the_items_do_not_give_is_settled_differs_to_the_cent(pg_dsn, tmp_path):
    f, data = day_with(pg_dsn, tmp_path, [1_000, 2_000])
    rep = report_dict(settle_day(data, "visa", scheme_fee_bp=13))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        C.migrate(conn)
        assert R.reconcile(conn, D, {"visa": [f]}, {"visa": rep}, now_ns=0).mismatches == []
        rep["net_minor"]["840"] -= 5
        [m] = R.reconcile(conn, D, {"visa": [f]}, {"visa": rep}, now_ns=0).mismatches
    assert (m.cls, m.currency, m.amount_minor) == ("settled_differs", "840", -5)


def test_iso20022_payout_pain001_and_pacs008_validate_and_carry_the_net(pg_dsn, tmp_path):
    from tests.codecs.iso20022_strategies import STORE, schema_dir
    if not (schema_dir() / "pain.001.001.09.xsd").exists():
        pytest.skip("no ISO 20022 schemas (PAYSWITCH_ISO20022_SCHEMAS)")
    f, _ = day_with(pg_dsn, tmp_path, [10_000, 2_500])
    items = [P.Item("M1", p.arn, p.kind, p.amount_minor, 840, 150) for p in f.presentments]
    m1 = P.Merchant("M1", "CORNER SHOP", "iso20022", account="GB29NWBK60161331926819",
                    agent_bic="NWBKGB2L")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, \
            Ledger(pg_dsn, mac=kit.MAC) as led:
        before = balance(led, kit.MERCHANT)
        rep = P.pay_day(conn, led, D, items, {"M1": m1}, accounts=accounts, ids=ids,
                        schemas=STORE, validate=True)
        again = P.pay_day(conn, led, D, items, {"M1": m1}, accounts=accounts, ids=ids,
                          schemas=STORE, validate=True)
        assert balance(led, kit.MERCHANT) == before + 12_200  # paid once
        assert balance(led, accounts("payout_clearing", "", 840)) == -12_200
    assert rep["merchants"]["M1"]["net"] == 12_500 - 300 == again["merchants"]["M1"]["paid"]
    pain = iso20022.parse(rep["pain001"], STORE)
    pacs = iso20022.parse(rep["pacs008"], STORE)
    assert [t.amount_minor for t in pain.payments[0].transfers] == [12_200]
    assert [(t.amount_minor, t.creditor_account.id) for t in pacs.transactions] == [
        (12_200, "GB29NWBK60161331926819")]


def test_nets_are_sales_less_refunds_fees_and_chargebacks():
    items = [P.Item("M", "a", "sale", 1_000, 840, 30), P.Item("M", "b", "credit", 200, 840, 6),
             P.Item("M", "c", "cash", 500, 840, 10)]
    n = P.nets(items, {"a": 1_000})[("M", 840)]
    assert (n.sales, n.refunds, n.fees, n.chargebacks, n.net) == (1_500, 200, 34, 1_000, 266)


def test_a_record_without_authorization_and_a_later_post_for_less_are_found(pg_dsn,
                                                                          tmp_path):
    import dataclasses

    from payswitch.codecs.clearing.arn import make_arn
    clock = kit.Clock(datetime(2026, 11, 27, 10))
    with Ledger(pg_dsn, mac=kit.MAC, clock_ns=clock, migrate=True) as led:
        kit.setup_accounts(led)
        kit.authorize(led, 1, 4_000)  # still pending when presented
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        build(conn, [VISA], D, tmp_path, kit.details())
    f = base2.read((tmp_path / "visa-20261127-001.ctf").read_bytes())
    stranger = dataclasses.replace(f.presentments[0], arn=make_arn("412345", D, 999),
                                   amount_minor=1_234)
    sent = dataclasses.replace(f, presentments=(*f.presentments, stranger))
    with Ledger(pg_dsn, mac=kit.MAC, clock_ns=clock) as led:
        kit.post(led, 1, 3_900)  # the ledger posts less than was presented
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        res = R.reconcile(conn, D, {"visa": [sent]}, {}, now_ns=0)
    got = {(m.cls, m.arn, m.amount_minor, m.detail) for m in res.mismatches}
    assert got == {("presented_without_authorization", stranger.arn, 1_234,
                    "no presentment row"),
                   ("amount_differs", f.presentments[0].arn, -100, "ledger posted")}
