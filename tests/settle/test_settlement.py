"""Network settlement in a real ledger: the network's report (the simulator reading our
file) becomes balanced transfers; the day's network receivable returns to zero; a
re-run posts nothing; `ledger verify` stays clean. Property: the legs balance the
receivable against the gross for any report."""

from __future__ import annotations

import hashlib
from datetime import date, datetime

import psycopg
from hypothesis import given
from hypothesis import strategies as st

from payswitch.ledger import Ledger, verify
from payswitch.ledger import settlement as S
from payswitch.ledger.clearing_build import Network, build
from payswitch.simulators.clearing import settle as network_settle
from tests.clearing import ledgerkit as kit

D = date(2026, 11, 27)
VISA = Network("visa", "base2", "412345")


def ids(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:16],
                          "big") or 1


def accounts(role: str, network: str, ccy: int) -> int:
    if role == "network_receivable":
        return kit.NET[network]
    if role == "merchant_payable":
        return kit.MERCHANT
    return ids("acct", role, ccy)


def balance(led, account: int) -> int:
    [a] = led.lookup_accounts([account])
    return a.debits_posted - a.credits_posted


def test_a_network_day_settles_to_a_zero_receivable_once(pg_dsn, tmp_path):
    clock = kit.Clock(datetime(2026, 11, 27, 10))
    with Ledger(pg_dsn, mac=kit.MAC, clock_ns=clock, migrate=True) as led:
        kit.setup_accounts(led)
        for pid, amount in ((1, 10_000), (2, 2_550), (3, 999)):
            kit.authorize(led, pid, amount)
            kit.post(led, pid)
        kit.authorize(led, 4, 700, processing_code="200000")  # a refund: a credit
        kit.post(led, 4)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        build(conn, [VISA], D, tmp_path, kit.details())
    report = network_settle((tmp_path / "visa-20261127-001.ctf").read_bytes(), "visa")
    doc = report.to_dict()
    assert len(doc["accepted"]) == 4
    fees = sum(S.merchant_fee(i, 30) for i in S.items(doc))
    with Ledger(pg_dsn, mac=kit.MAC, clock_ns=clock) as led:
        # the refund was held receivable -> payable like a sale; a credit is the other way
        # round, so the day's receivable before settlement is 10000+2550+999+700
        assert balance(led, kit.NET["visa"]) == 14_249
        out = S.settle(led, doc, network="visa", day=D, accounts=accounts, ids=ids)
        assert out["currencies"]["840"]["result"] == "created"
        net = doc["net_minor"]["840"]
        assert net == 10_000 + 2_550 + 999 - 700 - doc["interchange_minor"]["840"]
        assert balance(led, accounts("settlement_bank", "", 840)) == net
        assert balance(led, accounts("interchange_expense", "", 840)) == \
            doc["interchange_minor"]["840"]
        assert -balance(led, accounts("fee_income", "", 840)) == fees
        # receivable left: the refund, held as a sale (2 x 700) -- nothing else
        assert balance(led, kit.NET["visa"]) == 1_400
        before = led.lookup_accounts([kit.NET["visa"], kit.MERCHANT])
        again = S.settle(led, doc, network="visa", day=D, accounts=accounts, ids=ids)
        assert again["currencies"]["840"]["result"] == "exists"
        assert led.lookup_accounts([kit.NET["visa"], kit.MERCHANT]) == before
    with psycopg.connect(pg_dsn) as conn:
        rep = verify(conn, kit.MAC)
        assert rep.ok, rep.to_text()
        (n,) = conn.execute("select count(*) from events where type = 'settled'").fetchone()
        assert n == 1


def test_a_rejected_file_settles_nothing(pg_dsn):
    with Ledger(pg_dsn, mac=kit.MAC, migrate=True) as led:
        out = S.settle(led, {"file_error": "record 3: bad"}, network="visa", day=D,
                       accounts=accounts, ids=ids)
    assert out["currencies"] == {} and out["file_error"]


item = st.builds(lambda a, k, ic: {"arn": "1" * 23, "kind": k, "amount_minor": a,
                                   "currency": "840", "interchange_minor": min(ic, a)},
                 st.integers(1, 10**9), st.sampled_from(["sale", "cash", "credit"]),
                 st.integers(0, 10**7))


@given(st.lists(item, max_size=20), st.integers(0, 10**6), st.integers(0, 500))
def test_legs_take_the_gross_off_the_receivable_and_every_leg_balances(its, scheme, bp):
    gross = sum((-1 if i["kind"] == "credit" else 1) * i["amount_minor"] for i in its)
    ic = sum((-1 if i["kind"] == "credit" else 1) * i["interchange_minor"] for i in its)
    report = {"accepted": its, "net_minor": {"840": gross - ic - scheme},
              "interchange_minor": {"840": ic}, "scheme_fee_minor": {"840": scheme}}
    legs = S.legs(report, 840, bp)
    # each leg is one debit and one credit of the same amount: the ledger balances;
    # what the receivable is credited equals the gross it was debited at clearing
    off_receivable = sum(leg.amount_minor for leg in legs
                         if leg.credit_role == "network_receivable")
    assert off_receivable == gross
    [fees] = [leg.amount_minor for leg in legs if leg.name == "merchant_fees"]
    assert fees == ic + scheme + sum((-1 if i["kind"] == "credit" else 1)
                                     * S.markup(i["amount_minor"], bp) for i in its)
