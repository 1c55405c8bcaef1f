"""ACH origination on the real ledger: funds to clearing on file write, to settlement on
the settlement date, exactly once however often either step runs."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import psycopg
import pytest

from payswitch.codecs import nacha
from payswitch.ledger import Ledger, new_account, verify
from payswitch.ledger.ach import AchAccounts, AchLedgerError, originate, settle
from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.types import Transfer

MAC = hmac_sha256(bytes(32))
USD = 840
FUNDING, PAYABLE, CLEARING, SETTLEMENT = 1, 2, 3, 4
ACCOUNTS = AchAccounts(clearing_id=CLEARING, settlement_id=SETTLEMENT, ledger=USD,
                       originate_code=20, settle_code=21)
PAYROLL = Path(__file__).parent / "codecs" / "data" / "nacha" / "payroll.ach"


def payouts() -> nacha.NachaFile:
    """The sample payroll file without its WEB debit batch: PPD and CCD credits."""
    f = nacha.read(PAYROLL.read_text())
    credits = tuple(b for b in f.batches if b.service_class == 220)
    return dataclasses.replace(f, batches=credits)


def open_ledger(dsn: str, payable_funds: int) -> Ledger:
    led = Ledger(dsn, migrate=True, mac=MAC)
    led.create_accounts([
        new_account(FUNDING, USD, 9), new_account(CLEARING, USD, 3),
        new_account(PAYABLE, USD, 2, debits_must_not_exceed_credits=True),
        new_account(SETTLEMENT, USD, 4)])
    if payable_funds:
        led.create_transfers([Transfer(id=99, debit_account_id=FUNDING,
                                       credit_account_id=PAYABLE, amount=payable_funds,
                                       ledger=USD, code=1)])
    return led


def balance(led: Ledger, account: int) -> int:
    (a,) = led.lookup_accounts([account])
    return a.credits_posted - a.debits_posted


TOTAL = 124050 + 98765 + 500000


def test_originate_moves_every_credit_to_clearing_once(pg_dsn):
    with open_ledger(pg_dsn, 1_000_000) as led:
        f = payouts()
        text = originate(led, f, lambda e: PAYABLE, ACCOUNTS)
        assert nacha.read(text) == f
        assert balance(led, CLEARING) == TOTAL
        assert balance(led, PAYABLE) == 1_000_000 - TOTAL
        assert originate(led, f, lambda e: PAYABLE, ACCOUNTS) == text  # a retry: exists
        assert balance(led, CLEARING) == TOTAL


def test_settles_on_the_effective_date_not_before(pg_dsn):
    with open_ledger(pg_dsn, 1_000_000) as led:
        f = payouts()
        originate(led, f, lambda e: PAYABLE, ACCOUNTS)
        assert settle(led, f, ACCOUNTS, dt.date(2026, 11, 29)) == 0
        assert balance(led, SETTLEMENT) == 0
        assert settle(led, f, ACCOUNTS, dt.date(2026, 11, 30)) == TOTAL
        assert settle(led, f, ACCOUNTS, dt.date(2026, 12, 1)) == TOTAL  # idempotent
        assert (balance(led, CLEARING), balance(led, SETTLEMENT)) == (0, TOTAL)
    with psycopg.connect(pg_dsn) as conn:
        report = verify(conn, MAC)
    assert report.ok and report.ledger_balanced


def test_payable_without_the_funds_gets_no_file_and_moves_nothing(pg_dsn):
    with open_ledger(pg_dsn, TOTAL - 1) as led:
        with pytest.raises(AchLedgerError, match="exceeds_credits"):
            originate(led, payouts(), lambda e: PAYABLE, ACCOUNTS)
        assert balance(led, CLEARING) == 0 and balance(led, PAYABLE) == TOTAL - 1


def test_debit_entries_are_not_originated(pg_dsn):
    with open_ledger(pg_dsn, 1_000_000) as led:
        with pytest.raises(AchLedgerError, match="debit entries are not originated"):
            originate(led, nacha.read(PAYROLL.read_text()), lambda e: PAYABLE, ACCOUNTS)
        assert balance(led, CLEARING) == 0
