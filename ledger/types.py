"""Ledger value types, flags and exact result codes (TigerBeetle's model, in Python terms).

Ids are ``int`` in 0 < id < 2**128 (stored as uuid). Amounts are ``int`` minor units of the
ledger's currency. Everything here is plain data: no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

ID_MAX = (1 << 128) - 1
AMOUNT_MAX = (1 << 63) - 1  # bigint columns
TIMEOUT_MAX_S = 31 * 24 * 3600  # longest card-scheme authorization validity (lodging, rental)
BATCH_MAX = 8190  # transfers in one request (TigerBeetle's batch size)


class LedgerError(Exception):
    """Operating error of the ledger (database unreachable, batch aborted, ...).

    When raised from a write, the outcome is unknown: retry with the same ids; the answer
    will then be ``created``/``exists`` or a definite failure.
    """


class AccountFlags(enum.IntFlag):
    NONE = 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 2


class TransferFlags(enum.IntFlag):
    NONE = 0
    LINKED = 1
    PENDING = 2
    POST_PENDING_TRANSFER = 4
    VOID_PENDING_TRANSFER = 8


class CreateAccountResult(enum.StrEnum):
    CREATED = "created"
    EXISTS = "exists"
    EXISTS_WITH_DIFFERENT_FLAGS = "exists_with_different_flags"
    EXISTS_WITH_DIFFERENT_LEDGER = "exists_with_different_ledger"
    EXISTS_WITH_DIFFERENT_CODE = "exists_with_different_code"
    ID_MUST_NOT_BE_ZERO = "id_must_not_be_zero"
    ID_MUST_NOT_BE_INT_MAX = "id_must_not_be_int_max"
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
    LEDGER_MUST_NOT_BE_ZERO = "ledger_must_not_be_zero"
    CODE_MUST_NOT_BE_ZERO = "code_must_not_be_zero"


class CreateTransferResult(enum.StrEnum):
    CREATED = "created"
    LINKED_EVENT_FAILED = "linked_event_failed"
    LINKED_EVENT_CHAIN_OPEN = "linked_event_chain_open"
    # shape of the transfer itself (never recorded: a corrected retry may reuse the id)
    ID_MUST_NOT_BE_ZERO = "id_must_not_be_zero"
    ID_MUST_NOT_BE_INT_MAX = "id_must_not_be_int_max"
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = "debit_account_id_must_not_be_zero"
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = "credit_account_id_must_not_be_zero"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    PENDING_ID_MUST_BE_ZERO = "pending_id_must_be_zero"
    PENDING_ID_MUST_NOT_BE_ZERO = "pending_id_must_not_be_zero"
    PENDING_ID_MUST_BE_DIFFERENT = "pending_id_must_be_different"
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = "timeout_reserved_for_pending_transfer"
    TIMEOUT_TOO_LARGE = "timeout_too_large"
    LEDGER_MUST_NOT_BE_ZERO = "ledger_must_not_be_zero"
    CODE_MUST_NOT_BE_ZERO = "code_must_not_be_zero"
    AMOUNT_MUST_NOT_BE_ZERO = "amount_must_not_be_zero"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    # idempotency
    EXISTS_WITH_DIFFERENT_FLAGS = "exists_with_different_flags"
    EXISTS_WITH_DIFFERENT_PENDING_ID = "exists_with_different_pending_id"
    EXISTS_WITH_DIFFERENT_TIMEOUT = "exists_with_different_timeout"
    EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID = "exists_with_different_debit_account_id"
    EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID = "exists_with_different_credit_account_id"
    EXISTS_WITH_DIFFERENT_AMOUNT = "exists_with_different_amount"
    EXISTS_WITH_DIFFERENT_LEDGER = "exists_with_different_ledger"
    EXISTS_WITH_DIFFERENT_CODE = "exists_with_different_code"
    EXISTS = "exists"
    ID_ALREADY_FAILED = "id_already_failed"
    # state (recorded in failed_transfers: a retry gets id_already_failed)
    DEBIT_ACCOUNT_NOT_FOUND = "debit_account_not_found"
    CREDIT_ACCOUNT_NOT_FOUND = "credit_account_not_found"
    ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER = "accounts_must_have_the_same_ledger"
    TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS = (
        "transfer_must_have_the_same_ledger_as_accounts")
    PENDING_TRANSFER_NOT_FOUND = "pending_transfer_not_found"
    PENDING_TRANSFER_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = (
        "pending_transfer_has_different_debit_account_id")
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = (
        "pending_transfer_has_different_credit_account_id")
    PENDING_TRANSFER_HAS_DIFFERENT_LEDGER = "pending_transfer_has_different_ledger"
    PENDING_TRANSFER_HAS_DIFFERENT_CODE = "pending_transfer_has_different_code"
    EXCEEDS_PENDING_TRANSFER_AMOUNT = "exceeds_pending_transfer_amount"
    PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT = "pending_transfer_has_different_amount"
    PENDING_TRANSFER_ALREADY_POSTED = "pending_transfer_already_posted"
    PENDING_TRANSFER_ALREADY_VOIDED = "pending_transfer_already_voided"
    PENDING_TRANSFER_EXPIRED = "pending_transfer_expired"
    OVERFLOWS_DEBITS = "overflows_debits"
    OVERFLOWS_CREDITS = "overflows_credits"
    EXCEEDS_CREDITS = "exceeds_credits"
    EXCEEDS_DEBITS = "exceeds_debits"


# Failures that depend only on the transfer's own fields: not recorded, so the caller may fix
# the request and reuse the id. Every other failure outside a linked chain is recorded.
SHAPE_FAILURES = frozenset(
    r for r in CreateTransferResult
    if r.name.endswith(("_MUST_NOT_BE_ZERO", "_MUST_BE_ZERO", "_MUST_BE_DIFFERENT",
                        "_MUST_NOT_BE_INT_MAX", "_OUT_OF_RANGE", "_TOO_LARGE"))
    or r in (CreateTransferResult.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
             CreateTransferResult.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER)
)
NOT_RECORDED = SHAPE_FAILURES | {
    CreateTransferResult.CREATED, CreateTransferResult.EXISTS,
    CreateTransferResult.ID_ALREADY_FAILED, CreateTransferResult.LINKED_EVENT_FAILED,
    CreateTransferResult.LINKED_EVENT_CHAIN_OPEN,
} | {r for r in CreateTransferResult if r.name.startswith("EXISTS_WITH_DIFFERENT")}


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    ledger: int
    code: int
    flags: AccountFlags = AccountFlags.NONE


@dataclass(slots=True)
class AccountBalance:
    id: int
    ledger: int
    code: int
    flags: int
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    @property
    def net_credit(self) -> int:
        """Posted credits minus posted debits minus pending debits: what may still be spent."""
        return self.credits_posted - self.debits_posted - self.debits_pending


@dataclass(frozen=True, slots=True)
class Transfer:
    """One transfer request. For post/void, zero account ids / ledger / code mean "as the
    pending transfer", and amount 0 on a post means "the full pending amount"."""

    id: int
    debit_account_id: int = 0
    credit_account_id: int = 0
    amount: int = 0
    ledger: int = 0
    code: int = 0
    flags: TransferFlags = TransferFlags.NONE
    pending_id: int = 0
    timeout_s: int = 0  # pending only; 0 = never expires


@dataclass(frozen=True, slots=True)
class StoredTransfer:
    """A transfer as the ledger holds it (post/void carry the pending transfer's fields)."""

    id: int
    debit_account_id: int
    credit_account_id: int
    amount: int
    ledger: int
    code: int
    flags: int
    pending_id: int
    timeout_s: int
    ts: int


@dataclass(frozen=True, slots=True)
class Event:
    """One payment event. ``payload`` must be JSON-serialisable and hold no clear PAN.
    It may also be given as its text: a ``str`` is stored (and MACed) as it is, so it
    must be the canonical JSON of an object, as ``events.canonical_payload`` writes it
    (a caller building it from a template, tested equal to it; cheaper than a dict and
    its encoding). The store checks a text as it checks an encoded dict (size, PAN)."""

    id: int
    type: str
    payload: dict | str = field(default_factory=dict)
    payment_id: int | None = None
    transfer_id: int | None = None
    occurred_at_ns: int | None = None  # None: the writer's batch time
