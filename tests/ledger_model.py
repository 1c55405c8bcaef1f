"""A plain, independent model of the ledger rules (the spec in executable form).

Written without looking at the engine's data structures: whole-state deep copies for linked
chains, one dict per table. Tests compare it with the PostgreSQL ledger result by result.
"""

from __future__ import annotations

import copy

LINKED, PENDING, POST, VOID = 1, 2, 4, 8
DMNEC, CMNED = 1, 2
MAX = (1 << 63) - 1


class Model:
    def __init__(self):
        self.accounts = {}  # id -> dict(ledger, flags, dp, dpo, cp, cpo)
        self.transfers = {}  # id -> dict of stored fields
        self.failed = set()
        self.state = {}  # pending id -> [state, expires_at_ns or None]
        self.now = 0

    def add_account(self, id, ledger, flags):
        self.accounts[id] = dict(ledger=ledger, flags=flags, dp=0, dpo=0, cp=0, cpo=0)

    # one request: list of dicts with keys id, dr, cr, amount, ledger, code, flags, pid, timeout
    def apply(self, req):
        out = []
        i = 0
        n = len(req)
        while i < n:
            if not req[i]["flags"] & LINKED:
                r = self.one(req[i])
                if r not in NOT_RECORDED:
                    self.failed.add(req[i]["id"])
                out.append(r)
                i += 1
                continue
            j = i
            while j < n - 1 and req[j]["flags"] & LINKED:
                j += 1
            chain = req[i:j + 1]
            saved = copy.deepcopy((self.accounts, self.transfers, self.state))
            codes = []
            for k, t in enumerate(chain):
                if k == len(chain) - 1 and t["flags"] & LINKED:
                    codes.append("linked_event_chain_open")
                    break
                r = self.one(t)
                codes.append(r)
                if r != "created":
                    break
            if codes[-1] != "created":
                self.accounts, self.transfers, self.state = saved
                codes = ["linked_event_failed"] * (len(codes) - 1) + [codes[-1]]
                codes += ["linked_event_failed"] * (len(chain) - len(codes))
            out.extend(codes)
            i = j + 1
        return out

    def one(self, t):
        f = t["flags"]
        if bin(f & 14).count("1") > 1:
            return "flags_are_mutually_exclusive"
        pv = f & (POST | VOID)
        if pv:
            if t["timeout"]:
                return "timeout_reserved_for_pending_transfer"
        else:
            if t["timeout"] and not f & PENDING:
                return "timeout_reserved_for_pending_transfer"
            if t["dr"] == t["cr"]:
                return "accounts_must_be_different"
            if t["amount"] == 0:
                return "amount_must_not_be_zero"
        e = self.transfers.get(t["id"])
        if e is not None:
            if f != e["flags"]:
                return "exists_with_different_flags"
            for field in ("dr", "cr", "amount", "pid", "timeout", "ledger", "code"):
                if pv and field in ("dr", "cr", "amount", "ledger", "code") and not t[field]:
                    continue
                if t[field] != e[field]:
                    name = {"dr": "debit_account_id", "cr": "credit_account_id",
                            "pid": "pending_id"}.get(field, field)
                    return "exists_with_different_" + name
            return "exists"
        if t["id"] in self.failed:
            return "id_already_failed"
        if pv:
            p = self.transfers.get(t["pid"])
            if p is None:
                return "pending_transfer_not_found"
            if not p["flags"] & PENDING:
                return "pending_transfer_not_pending"
            amount = t["amount"] or p["amount"]
            if f & POST and amount > p["amount"]:
                return "exceeds_pending_transfer_amount"
            if f & VOID and t["amount"] and t["amount"] != p["amount"]:
                return "pending_transfer_has_different_amount"
            st, exp = self.state[p["id"]]
            if st != "pending":
                return {"posted": "pending_transfer_already_posted",
                        "voided": "pending_transfer_already_voided",
                        "expired": "pending_transfer_expired"}[st]
            if exp is not None and exp <= self.now:
                return "pending_transfer_expired"
            d, c = self.accounts[p["dr"]], self.accounts[p["cr"]]
            d["dp"] -= p["amount"]
            c["cp"] -= p["amount"]
            if f & POST:
                d["dpo"] += amount
                c["cpo"] += amount
                self.state[p["id"]][0] = "posted"
            else:
                amount = p["amount"]
                self.state[p["id"]][0] = "voided"
            self.transfers[t["id"]] = dict(t, dr=p["dr"], cr=p["cr"], amount=amount,
                                           ledger=p["ledger"], code=p["code"])
            return "created"
        d = self.accounts.get(t["dr"])
        if d is None:
            return "debit_account_not_found"
        c = self.accounts.get(t["cr"])
        if c is None:
            return "credit_account_not_found"
        if d["ledger"] != c["ledger"]:
            return "accounts_must_have_the_same_ledger"
        if t["ledger"] != d["ledger"]:
            return "transfer_must_have_the_same_ledger_as_accounts"
        a = t["amount"]
        if d["flags"] & DMNEC and d["dp"] + d["dpo"] + a > d["cpo"]:
            return "exceeds_credits"
        if c["flags"] & CMNED and c["cp"] + c["cpo"] + a > c["dpo"]:
            return "exceeds_debits"
        if f & PENDING:
            d["dp"] += a
            c["cp"] += a
            self.state[t["id"]] = ["pending",
                                   self.now + t["timeout"] * 10**9 if t["timeout"] else None]
        else:
            d["dpo"] += a
            c["cpo"] += a
        self.transfers[t["id"]] = dict(t)
        return "created"

    def expire(self):
        n = 0
        for pid, (st, exp) in self.state.items():
            if st == "pending" and exp is not None and exp <= self.now:
                p = self.transfers[pid]
                self.accounts[p["dr"]]["dp"] -= p["amount"]
                self.accounts[p["cr"]]["cp"] -= p["amount"]
                self.state[pid][0] = "expired"
                n += 1
        return n


NOT_RECORDED = {
    "created", "exists", "id_already_failed", "linked_event_failed", "linked_event_chain_open",
    "flags_are_mutually_exclusive", "timeout_reserved_for_pending_transfer",
    "accounts_must_be_different", "amount_must_not_be_zero",
    "exists_with_different_flags", "exists_with_different_debit_account_id",
    "exists_with_different_credit_account_id", "exists_with_different_amount",
    "exists_with_different_pending_id", "exists_with_different_timeout",
    "exists_with_different_ledger", "exists_with_different_code",
}
