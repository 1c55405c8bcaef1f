"""ACH origination in the ledger: payouts move to the ACH clearing account when the
outgoing NACHA file is written, and from there to the settlement account on the
settlement date.

    text = originate(ledger, nacha_file, source_of, accounts)   # file + funds, or neither
    settle(ledger, nacha_file, accounts, today)                 # batches due by ``today``

Only credit entries are originated (merchant payouts, account-to-account transfers):
a debit we originate would move money the other way on a later day, which this module
does not model. Every transfer id derives from the file's identity (immediate origin,
creation date and time, file id modifier) and the entry's trace number or the batch
number, so re-running either step after a crash answers ``exists`` and moves nothing
twice. Both steps are one linked chain per call: all of it or none of it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from payswitch.codecs import nacha
from payswitch.codecs.nacha import codes

from .store import Ledger
from .types import BATCH_MAX, CreateTransferResult, LedgerError, Transfer, TransferFlags

_OK = (CreateTransferResult.CREATED, CreateTransferResult.EXISTS)


class AchLedgerError(LedgerError):
    """The ledger refused an ACH step (``results`` says why); nothing of it was kept."""

    def __init__(self, reason: str, results: Sequence[CreateTransferResult] = ()) -> None:
        self.results = tuple(results)
        super().__init__(reason)


@dataclass(frozen=True)
class AchAccounts:
    """The two accounts of one ACH origination ledger and the transfer codes used."""

    clearing_id: int  # funds on their way: written, not yet settled
    settlement_id: int  # the bank's settlement account at the operator
    ledger: int  # ISO 4217 numeric, 840 for USD
    originate_code: int
    settle_code: int


def ach_id(*parts: str | int) -> int:
    """A 128-bit id derived from ``parts`` (never 0)."""
    h = hashlib.sha256("|".join(str(p) for p in ("payswitch-ach", *parts)).encode()).digest()
    return int.from_bytes(h[:16], "big") or 1


def file_key(f: nacha.NachaFile) -> str:
    """NACHA's own uniqueness rule for a file: origin, creation date/time, modifier."""
    return f"{f.immediate_origin}|{f.creation_date}|{f.creation_time}|{f.file_id_modifier}"


def _money_entries(b: nacha.Batch) -> list[nacha.Entry]:
    out = []
    for e in b.entries:
        if codes.is_debit(e.transaction_code):
            raise AchLedgerError(f"batch {b.batch_number}: debit entries are not originated")
        if e.amount:  # prenotes and zero-dollar entries move nothing
            out.append(e)
    return out


def origination_transfers(f: nacha.NachaFile, source_of: Callable[[nacha.Entry], int],
                          accounts: AchAccounts) -> list[Transfer]:
    """source -> clearing, one per credit entry with money, as one linked chain."""
    key = file_key(f)
    out = [Transfer(id=ach_id(key, e.trace_number, "originate"),
                    debit_account_id=source_of(e), credit_account_id=accounts.clearing_id,
                    amount=e.amount, ledger=accounts.ledger, code=accounts.originate_code)
           for b in f.batches for e in _money_entries(b)]
    return _linked(out)


def settlement_transfers(f: nacha.NachaFile, accounts: AchAccounts,
                         today: dt.date) -> list[Transfer]:
    """clearing -> settlement, one per batch whose effective date has come."""
    key = file_key(f)
    out = []
    for b in f.batches:
        total = sum(e.amount for e in _money_entries(b))
        if total and b.effective_date <= today:
            out.append(Transfer(id=ach_id(key, b.batch_number, "settle"),
                                debit_account_id=accounts.clearing_id,
                                credit_account_id=accounts.settlement_id, amount=total,
                                ledger=accounts.ledger, code=accounts.settle_code))
    return _linked(out)


def _linked(transfers: list[Transfer]) -> list[Transfer]:
    if len(transfers) > BATCH_MAX:
        raise AchLedgerError(f"more than {BATCH_MAX} entries in one file")
    return [dataclasses.replace(t, flags=TransferFlags.LINKED)
            if i < len(transfers) - 1 else t for i, t in enumerate(transfers)]


def _apply(ledger: Ledger, transfers: list[Transfer], what: str) -> None:
    if not transfers:
        return
    results = ledger.create_transfers(transfers)
    # A retried chain answers exists on its first transfer and linked_event_failed on
    # the rest: the whole chain is already there (chains are atomic).
    retried = results[0] is CreateTransferResult.EXISTS and all(
        r in (CreateTransferResult.EXISTS, CreateTransferResult.LINKED_EVENT_FAILED)
        for r in results[1:])
    if not (retried or all(r in _OK for r in results)):
        failed = next(r for r in results if r not in _OK
                      and r is not CreateTransferResult.LINKED_EVENT_FAILED)
        raise AchLedgerError(f"{what} refused by the ledger: {failed}", results)


def originate(ledger: Ledger, f: nacha.NachaFile, source_of: Callable[[nacha.Entry], int],
              accounts: AchAccounts) -> str:
    """The file's text, once the funds of every credit entry sit in the clearing account.

    The file is written (and checked) first, so a file the reader would refuse moves
    no money; if the ledger refuses (e.g. a payable without the funds) no file is
    returned and nothing moved.
    """
    text = nacha.write(f)
    _apply(ledger, origination_transfers(f, source_of, accounts), "origination")
    return text


def settle(ledger: Ledger, f: nacha.NachaFile, accounts: AchAccounts,
           today: dt.date) -> int:
    """Moves each due batch's total from clearing to settlement. Returns the amount due
    by ``today`` (already settled batches count: the call is idempotent)."""
    transfers = settlement_transfers(f, accounts, today)
    _apply(ledger, transfers, "settlement")
    return sum(t.amount for t in transfers)
