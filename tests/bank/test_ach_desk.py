"""ACH on the switch side against the operator simulator: payouts from the ledger into
a file, returns back into the payable accounts (once), NOCs into the next file."""

from __future__ import annotations

import datetime as dt

import psycopg
from bankkit import MAC

from payswitch.codecs import nacha
from payswitch.ledger import new_account, verify
from payswitch.ledger.types import Transfer
from payswitch.simulators.ach import AchOperator, OperatorConfig
from payswitch.switch.ach_desk import AchDesk

DAY = dt.date(2026, 11, 27)  # a Friday
FUNDING = 7
PAYABLES = {"m-returned": (101, "111000025", "1111111"), "m-changed": (102, "021000021",
                                                                      "2222222"),
            "m-ok": (103, "091000019", "3333333")}


def funded(desk: AchDesk, amounts: dict[str, int], tag: str) -> None:
    desk.led.create_accounts([new_account(FUNDING, 840, 9)] +
                             [new_account(a, 840, 2, debits_must_not_exceed_credits=True)
                              for a, _, _ in PAYABLES.values()])
    desk.led.create_transfers([Transfer(hash((tag, p)) & (2**64 - 1) or 1, FUNDING,
                                        PAYABLES[p][0], amt, 840, 1)
                               for p, amt in amounts.items()])


def balance(desk: AchDesk, account: int) -> int:
    (a,) = desk.led.lookup_accounts([account])
    return a.credits_posted - a.debits_posted


def test_payouts_returns_and_nocs(pg_dsn):
    desk = AchDesk(pg_dsn, MAC)
    for pid, (acc, routing, number) in PAYABLES.items():
        desk.add_payee(pid, acc, pid.upper(), routing, number)
    funded(desk, {"m-returned": 1000, "m-changed": 2000, "m-ok": 3000}, "day1")
    text, f = desk.originate(DAY)
    assert nacha.read(text) == f and sum(e.amount for e in f.entries()) == 6000
    clearing = desk.cfg.accounts.clearing_id
    assert balance(desk, clearing) == 6000 and balance(desk, 101) == 0
    assert desk.originate(DAY) is None  # nothing left to pay out

    op = AchOperator(OperatorConfig(outcomes={"1111111": "R03", "2222222": "C01"}))
    answer = op.submit(text, dt.datetime.combine(DAY, dt.time(10), dt.UTC))
    assert answer.ack.accepted
    assert desk.settle(max(answer.settlement_dates.values())) == 6000
    assert balance(desk, desk.cfg.accounts.settlement_id) == 6000

    returns = nacha.write(answer.returns)
    got = desk.process(returns)
    assert (got.returns, got.returned_minor, got.codes) == (1, 1000, {"R03": 1})
    assert balance(desk, 101) == 1000  # the merchant's payable is restored
    again = desk.process(returns)  # the same file twice moves nothing twice
    assert again.returns == 0 and balance(desk, 101) == 1000

    got = desk.process(nacha.write(answer.nocs))
    assert got.codes == {"C01": 1}
    routing, account, change = desk.payee("m-changed")
    assert (account, change) == ("22222229", "C01")

    funded(desk, {"m-changed": 500}, "day2")
    text2, f2 = desk.originate(DAY + dt.timedelta(days=3))
    accounts = {e.individual_id.strip(): e.account.strip() for e in f2.entries()}
    assert accounts["m-changed"] == "22222229"  # the next file uses the corrected account
    assert accounts["m-returned"] == "1111111"  # its returned money is paid out again
    with psycopg.connect(pg_dsn) as c:
        events = dict(c.execute("select type, count(*) from events where type like 'ach_%'"
                                " group by type").fetchall())
    with psycopg.connect(pg_dsn) as c:
        rep = verify(c, MAC)
    assert events == {"ach_returned": 1, "ach_changed": 1}
    assert rep.ok, rep.to_text()
    desk.close()
