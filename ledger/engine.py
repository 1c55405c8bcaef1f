"""The transfer rules, without I/O: applies requests to a snapshot of the touched state.

The store loads exactly the rows a batch touches (locked), runs every request of the batch
through one ``Engine`` in order, then writes the engine's outputs back in one transaction.
Cost per transfer: a few dict look-ups and integer compares (~10 µs in CPython), so the
database round trips, not this, bound a batch.

Order of checks (documented because result codes are part of the contract):
1. the transfer's own shape (ids, flags, amounts, timeout) — never recorded;
2. ``exists`` / ``exists_with_different_<field>`` when the id is already a transfer;
3. ``id_already_failed`` when the id failed before on state;
4. accounts / pending transfer, ledgers, amounts, pending state, expiry, limits.
Outside a linked chain, a failure from step 4 is recorded so a retry answers
``id_already_failed``. Inside a chain nothing of the chain is kept, not even its failures.
"""

from __future__ import annotations

from dataclasses import dataclass

from .types import (
    AMOUNT_MAX,
    ID_MAX,
    NOT_RECORDED,
    TIMEOUT_MAX_S,
    AccountBalance,
    AccountFlags,
    CreateTransferResult,
    StoredTransfer,
    Transfer,
    TransferFlags,
)

R = CreateTransferResult
# plain ints: IntFlag arithmetic costs ~1 µs per operation on the hot path
_LINKED = int(TransferFlags.LINKED)
_PENDING = int(TransferFlags.PENDING)
_POST = int(TransferFlags.POST_PENDING_TRANSFER)
_VOID = int(TransferFlags.VOID_PENDING_TRANSFER)
_DMNEC = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CMNED = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
NS_PER_S = 1_000_000_000


@dataclass(slots=True)
class PendingInfo:
    state: str  # pending | posted | voided | expired
    expires_at_ns: int | None


class Engine:
    """State loaded for one batch plus what the batch changed.

    ``accounts``: every account the batch may touch (missing = not found).
    ``transfers``: existing transfers whose id is in the batch or is a batch's pending_id.
    ``failed``: ids in the batch that failed before. ``pending``: state of loaded pending ones.
    """

    def __init__(self, accounts: dict[int, AccountBalance], transfers: dict[int, StoredTransfer],
                 failed: set[int], pending: dict[int, PendingInfo], now_ns: int) -> None:
        self.accounts = accounts
        self.transfers = transfers
        self.failed = failed
        self.pending = pending
        self.now_ns = now_ns
        self._next_ts = now_ns
        # outputs
        self.new_transfers: list[StoredTransfer] = []
        self.new_failed: list[tuple[int, str, int]] = []
        self.pending_changes: dict[int, PendingInfo] = {}
        self.touched_accounts: set[int] = set()
        self._undo: list[tuple] | None = None

    # -- requests --------------------------------------------------------------------------

    def apply(self, request: list[Transfer]) -> list[R]:
        """Applies one caller's transfers in order; chains never cross requests."""
        n = len(request)
        results: list[R] = [R.CREATED] * n
        chain_start: int | None = None
        broken = False
        for i, t in enumerate(request):
            linked = bool(int(t.flags) & _LINKED)
            if linked and chain_start is None:
                chain_start, broken = i, False
                self._undo = []
            if chain_start is not None and broken:
                r = R.LINKED_EVENT_FAILED
            elif linked and i == n - 1:
                r = R.LINKED_EVENT_CHAIN_OPEN
            else:
                r = self._create(t)
            results[i] = r
            if chain_start is None:
                if r not in NOT_RECORDED:
                    self.failed.add(t.id)
                    self.new_failed.append((t.id, r.value, self._ts()))
            elif r is not R.CREATED and not broken:
                broken = True
                self._rollback()
                for j in range(chain_start, i):
                    results[j] = R.LINKED_EVENT_FAILED
            if chain_start is not None and not linked:
                chain_start, broken, self._undo = None, False, None
        if chain_start is not None:  # only reached when the last one closed nothing
            self._undo = None
        return results

    def expire(self, pending_id: int) -> bool:
        """Voids an expired hold (the expiry job). False when it is no longer pending."""
        info = self.pending.get(pending_id)
        p = self.transfers.get(pending_id)
        if info is None or p is None or info.state != "pending":
            return False
        dr, cr = self.accounts[p.debit_account_id], self.accounts[p.credit_account_id]
        self._touch(dr)
        self._touch(cr)
        dr.debits_pending -= p.amount
        cr.credits_pending -= p.amount
        self._set_pending(pending_id, PendingInfo("expired", info.expires_at_ns))
        return True

    # -- one transfer ----------------------------------------------------------------------

    def _create(self, t: Transfer) -> R:
        r = _shape(t)
        if r is not None:
            return r
        e = self.transfers.get(t.id)
        if e is not None:
            return _exists(t, e)
        if t.id in self.failed:
            return R.ID_ALREADY_FAILED
        flags = int(t.flags)
        if flags & (_POST | _VOID):
            return self._post_or_void(t, flags)
        dr = self.accounts.get(t.debit_account_id)
        if dr is None:
            return R.DEBIT_ACCOUNT_NOT_FOUND
        cr = self.accounts.get(t.credit_account_id)
        if cr is None:
            return R.CREDIT_ACCOUNT_NOT_FOUND
        if dr.ledger != cr.ledger:
            return R.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if t.ledger != dr.ledger:
            return R.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
        amount = t.amount
        if dr.debits_pending + dr.debits_posted + amount > AMOUNT_MAX:
            return R.OVERFLOWS_DEBITS
        if cr.credits_pending + cr.credits_posted + amount > AMOUNT_MAX:
            return R.OVERFLOWS_CREDITS
        if dr.flags & _DMNEC and dr.debits_pending + dr.debits_posted + amount > dr.credits_posted:
            return R.EXCEEDS_CREDITS
        if cr.flags & _CMNED and cr.credits_pending + cr.credits_posted + amount > cr.debits_posted:
            return R.EXCEEDS_DEBITS
        self._touch(dr)
        self._touch(cr)
        ts = self._ts()
        if flags & _PENDING:
            dr.debits_pending += amount
            cr.credits_pending += amount
            expires = ts + t.timeout_s * NS_PER_S if t.timeout_s else None
            self._set_pending(t.id, PendingInfo("pending", expires))
        else:
            dr.debits_posted += amount
            cr.credits_posted += amount
        self._add_transfer(StoredTransfer(
            t.id, t.debit_account_id, t.credit_account_id, amount, t.ledger, t.code,
            flags, 0, t.timeout_s, ts))
        return R.CREATED

    def _post_or_void(self, t: Transfer, flags: int) -> R:
        p = self.transfers.get(t.pending_id)
        if p is None:
            return R.PENDING_TRANSFER_NOT_FOUND
        if not p.flags & _PENDING:
            return R.PENDING_TRANSFER_NOT_PENDING
        if t.debit_account_id and t.debit_account_id != p.debit_account_id:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id and t.credit_account_id != p.credit_account_id:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
        if t.ledger and t.ledger != p.ledger:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
        if t.code and t.code != p.code:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_CODE
        post = bool(flags & _POST)
        if post:
            amount = t.amount or p.amount
            if amount > p.amount:
                return R.EXCEEDS_PENDING_TRANSFER_AMOUNT
        else:
            if t.amount and t.amount != p.amount:
                return R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
            amount = p.amount
        info = self.pending[p.id]
        if info.state == "posted":
            return R.PENDING_TRANSFER_ALREADY_POSTED
        if info.state == "voided":
            return R.PENDING_TRANSFER_ALREADY_VOIDED
        if info.state == "expired" or (
                info.expires_at_ns is not None and info.expires_at_ns <= self.now_ns):
            return R.PENDING_TRANSFER_EXPIRED
        dr, cr = self.accounts[p.debit_account_id], self.accounts[p.credit_account_id]
        self._touch(dr)
        self._touch(cr)
        dr.debits_pending -= p.amount
        cr.credits_pending -= p.amount
        if post:
            dr.debits_posted += amount
            cr.credits_posted += amount
        self._set_pending(p.id, PendingInfo("posted" if post else "voided", info.expires_at_ns))
        self._add_transfer(StoredTransfer(
            t.id, p.debit_account_id, p.credit_account_id, amount, p.ledger, p.code,
            flags, p.id, 0, self._ts()))
        return R.CREATED

    # -- mutation with undo (linked chains) ------------------------------------------------

    def _ts(self) -> int:
        ts = self._next_ts
        self._next_ts += 1
        return ts

    def _touch(self, a: AccountBalance) -> None:
        if self._undo is not None:
            self._undo.append(("acct", a, a.debits_pending, a.debits_posted,
                               a.credits_pending, a.credits_posted, a.id in self.touched_accounts))
        self.touched_accounts.add(a.id)

    def _set_pending(self, pid: int, info: PendingInfo) -> None:
        if self._undo is not None:
            self._undo.append(("pending", pid, self.pending.get(pid),
                               self.pending_changes.get(pid)))
        self.pending[pid] = info
        self.pending_changes[pid] = info

    def _add_transfer(self, st: StoredTransfer) -> None:
        if self._undo is not None:
            self._undo.append(("transfer", st.id))
        self.transfers[st.id] = st
        self.new_transfers.append(st)

    def _rollback(self) -> None:
        assert self._undo is not None
        for entry in reversed(self._undo):
            kind = entry[0]
            if kind == "acct":
                _, a, dp, dpo, cp, cpo, was_touched = entry
                a.debits_pending, a.debits_posted = dp, dpo
                a.credits_pending, a.credits_posted = cp, cpo
                if not was_touched:
                    self.touched_accounts.discard(a.id)
            elif kind == "pending":
                _, pid, old, old_change = entry
                if old is None:
                    del self.pending[pid]
                else:
                    self.pending[pid] = old
                if old_change is None:
                    self.pending_changes.pop(pid, None)
                else:
                    self.pending_changes[pid] = old_change
            else:
                st_id = entry[1]
                del self.transfers[st_id]
                popped = self.new_transfers.pop()
                assert popped.id == st_id
        self._undo = []


def _shape(t: Transfer) -> R | None:
    if t.id == 0:
        return R.ID_MUST_NOT_BE_ZERO
    if t.id >= ID_MAX or t.id < 0:
        return R.ID_MUST_NOT_BE_INT_MAX
    f = int(t.flags)
    if bin(f & 14).count("1") > 1:
        return R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if t.amount < 0 or t.amount > AMOUNT_MAX:
        return R.AMOUNT_OUT_OF_RANGE
    for acct in (t.debit_account_id, t.credit_account_id, t.pending_id):
        if acct < 0 or acct >= ID_MAX:
            return R.ID_MUST_NOT_BE_INT_MAX
    if f & (_POST | _VOID):
        if t.pending_id == 0:
            return R.PENDING_ID_MUST_NOT_BE_ZERO
        if t.pending_id == t.id:
            return R.PENDING_ID_MUST_BE_DIFFERENT
        if t.timeout_s != 0:
            return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        if t.debit_account_id and t.debit_account_id == t.credit_account_id:
            return R.ACCOUNTS_MUST_BE_DIFFERENT
        return None
    if t.pending_id != 0:
        return R.PENDING_ID_MUST_BE_ZERO
    if t.timeout_s != 0 and not f & _PENDING:
        return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
    if t.timeout_s < 0 or t.timeout_s > TIMEOUT_MAX_S:
        return R.TIMEOUT_TOO_LARGE
    if t.debit_account_id == 0:
        return R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
    if t.credit_account_id == 0:
        return R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
    if t.debit_account_id == t.credit_account_id:
        return R.ACCOUNTS_MUST_BE_DIFFERENT
    if t.ledger == 0:
        return R.LEDGER_MUST_NOT_BE_ZERO
    if t.code == 0:
        return R.CODE_MUST_NOT_BE_ZERO
    if t.amount == 0:
        return R.AMOUNT_MUST_NOT_BE_ZERO
    return None


def _exists(t: Transfer, e: StoredTransfer) -> R:
    f = int(t.flags)
    if f != e.flags:
        return R.EXISTS_WITH_DIFFERENT_FLAGS
    pv = bool(f & (_POST | _VOID))  # zero fields of a post/void mean "as pending"
    if (t.debit_account_id or not pv) and t.debit_account_id != e.debit_account_id:
        return R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if (t.credit_account_id or not pv) and t.credit_account_id != e.credit_account_id:
        return R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    if (t.amount or not pv) and t.amount != e.amount:
        return R.EXISTS_WITH_DIFFERENT_AMOUNT
    if t.pending_id != e.pending_id:
        return R.EXISTS_WITH_DIFFERENT_PENDING_ID
    if t.timeout_s != e.timeout_s:
        return R.EXISTS_WITH_DIFFERENT_TIMEOUT
    if (t.ledger or not pv) and t.ledger != e.ledger:
        return R.EXISTS_WITH_DIFFERENT_LEDGER
    if (t.code or not pv) and t.code != e.code:
        return R.EXISTS_WITH_DIFFERENT_CODE
    return R.EXISTS
