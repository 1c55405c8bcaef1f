"""Random sequences of transfers against the in-memory model: every result code and every
balance must agree. Each hypothesis case gets a schema of its own in the run's database."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from payswitch.ledger.store import Ledger, Request
from payswitch.ledger.types import Account, Transfer, TransferFlags
from tests.ledger_model import CMNED, DMNEC, LINKED, PENDING, POST, VOID, Model

ACCOUNTS = {1: (840, DMNEC), 2: (840, 0), 3: (840, CMNED), 4: (978, 0), 5: (978, DMNEC)}
MISSING = 99
T0 = 1_700_000_000 * 10**9
STEP_NS = 250_000_997  # never lands exactly on a whole-second expiry (see test notes)

accounts_st = st.sampled_from([1, 2, 3, 4, 5, 1, 2, MISSING])
ledger_st = st.sampled_from([840, 840, 840, 978])
GOOD = [(2, 1, 840), (2, 3, 840), (1, 2, 840), (3, 2, 840), (1, 3, 840), (2, 1, 840),
        (4, 5, 978), (5, 4, 978)]
# mostly transfers that can succeed, some that cannot
legs_st = st.one_of(
    st.sampled_from(GOOD), st.sampled_from(GOOD), st.sampled_from(GOOD),
    st.tuples(accounts_st, accounts_st, ledger_st))


class LedgerMachine(RuleBasedStateMachine):
    admin_dsn: str = ""

    def __init__(self):
        super().__init__()
        self.schema = "hs_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            c.execute(f"create schema {self.schema}")
        self.model = Model()
        self.model.now = T0
        self.ledger = Ledger(self.admin_dsn, schema=self.schema, migrate=True,
                             clock_ns=lambda: self.model.now)
        self.next_id = 1000
        self.history: list[dict] = []

    def teardown(self):
        self.ledger.close()
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            c.execute(f"drop schema {self.schema} cascade")

    # -- helpers ---------------------------------------------------------------------------

    def new_id(self):
        self.next_id += 1
        return self.next_id

    def submit(self, reqs):
        db = self.ledger.submit([Request(tuple(_tr(t) for t in req)) for req in reqs])
        for req, out in zip(reqs, db, strict=True):
            want = self.model.apply(req)
            got = [r.value for r in out.results]
            assert got == want, (req, got, want)
            self.history.extend(req)

    def spec(self, dr, cr, amount, ledger, pending=False, timeout=0):
        return dict(id=self.new_id(), dr=dr, cr=cr, amount=amount, ledger=ledger, code=1,
                    flags=PENDING if pending else 0, pid=0, timeout=timeout if pending else 0)

    def pending_ids(self):
        return [t["id"] for t in self.model.transfers.values() if t["flags"] & PENDING]

    # -- rules -----------------------------------------------------------------------------

    @initialize()
    def open_accounts(self):
        res = self.ledger.create_accounts(
            [Account(i, led, 1, fl) for i, (led, fl) in ACCOUNTS.items()])
        assert all(r == "created" for r in res)
        for i, (led, fl) in ACCOUNTS.items():
            self.model.add_account(i, led, fl)

    @rule(leg=legs_st, amount=st.integers(0, 120), pending=st.booleans(),
          timeout=st.integers(0, 3))
    def transfer(self, leg, amount, pending, timeout):
        dr, cr, ledger = leg
        self.submit([[self.spec(dr, cr, amount, ledger, pending, timeout)]])

    @rule(data=st.data(), post=st.booleans(),
          amount=st.one_of(st.just(0), st.integers(1, 30), st.integers(0, 130)))
    def post_or_void(self, data, post, amount):
        live = [i for i in self.pending_ids() if self.model.state[i][0] == "pending"]
        pid = data.draw(st.sampled_from([*live, *live, *self.pending_ids(), MISSING]))
        t = dict(id=self.new_id(), dr=0, cr=0, amount=amount if post or amount < 20 else 0,
                 ledger=0, code=0, flags=POST if post else VOID, pid=pid, timeout=0)
        self.submit([[t]])

    @rule(legs=st.lists(st.tuples(legs_st, st.integers(1, 80), st.booleans()),
                        min_size=1, max_size=4),
          open_end=st.sampled_from([False, False, False, True]))
    def linked_chain(self, legs, open_end):
        chain = [self.spec(dr, cr, amount, ledger, pending, 0)
                 for (dr, cr, ledger), amount, pending in legs]
        for t in chain[:-1] if not open_end else chain:
            t["flags"] |= LINKED
        self.submit([chain])

    @rule(data=st.data(), change=st.sampled_from([None, None, "amount", "flags", "dr"]))
    def retry(self, data, change):
        if not self.history:
            return
        t = dict(data.draw(st.sampled_from(self.history)))
        if change == "amount":
            t["amount"] += 1
        elif change == "flags" and not t["flags"] & (POST | VOID):
            t["flags"] ^= PENDING
            t["timeout"] = 0
        elif change == "dr" and t["dr"]:
            t["dr"] = 2 if t["dr"] != 2 else 1
        # a retried chain member is sent alone: strip LINKED so it is not an open chain
        if t["flags"] & LINKED and change != "flags":
            t["flags"] &= ~LINKED
        self.submit([[t]])

    @rule(n=st.integers(2, 4), data=st.data())
    def batch_of_requests(self, n, data):
        reqs = []
        for _ in range(n):
            dr, cr, ledger = data.draw(legs_st)
            reqs.append([self.spec(dr, cr, data.draw(st.integers(1, 60)), ledger,
                                   data.draw(st.booleans()), data.draw(st.integers(0, 2)))])
        if self.history and data.draw(st.booleans()):
            again = dict(data.draw(st.sampled_from(self.history)))
            again["flags"] &= ~LINKED
            reqs.append([again])
        self.submit(reqs)

    @rule(steps=st.integers(1, 8))
    def advance_time(self, steps):
        self.model.now += steps * STEP_NS

    @rule()
    def expiry_job(self):
        assert self.ledger.expire_pending() == self.model.expire()

    @invariant()
    def balances_agree(self):
        if not self.model.accounts:
            return
        for a in self.ledger.lookup_accounts(ACCOUNTS):
            m = self.model.accounts[a.id]
            got = (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
            assert got == (m["dp"], m["dpo"], m["cp"], m["cpo"]), a.id


def _tr(t):
    return Transfer(t["id"], t["dr"], t["cr"], t["amount"], t["ledger"], t["code"],
                    TransferFlags(t["flags"]), t["pid"], t["timeout"])


def test_ledger_matches_model(pg_session_dsn):
    LedgerMachine.admin_dsn = pg_session_dsn
    LedgerMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30,
                                               deadline=None)
    LedgerMachine.TestCase().runTest()


@pytest.mark.slow
def test_ledger_matches_model_long(pg_session_dsn):
    LedgerMachine.admin_dsn = pg_session_dsn
    LedgerMachine.TestCase.settings = settings(max_examples=400, stateful_step_count=60,
                                               deadline=None)
    LedgerMachine.TestCase().runTest()
