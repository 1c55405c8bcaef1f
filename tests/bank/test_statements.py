"""camt.053 / camt.054 from the ledger: balances and entries equal the ledger's to the
cent, and the documents are valid against the official XSDs."""

from __future__ import annotations

import datetime as dt
import itertools

import psycopg
from bankkit import MAC, NOW, codec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payswitch.codecs.iso20022 import model as m
from payswitch.ledger import Ledger, new_account
from payswitch.ledger.statements import camt053, camt054
from payswitch.ledger.types import Transfer, TransferFlags

DAY = dt.date(2026, 11, 27)
EUR = 978
_ids = itertools.count(1)

# (day offset -1/0/+1, kind, from, to, amount); kinds: plain, pending, post, void
ops = st.lists(st.tuples(st.sampled_from([-1, 0, 0, 1]),
                         st.sampled_from(["plain", "plain", "pending_post", "pending_void",
                                          "pending"]),
                         st.integers(0, 2), st.integers(0, 2), st.integers(1, 10**9)),
               max_size=25)


class Clock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns

    def at(self, offset: int, i: int) -> None:
        base = dt.datetime.combine(DAY + dt.timedelta(days=offset), dt.time(), dt.UTC)
        self.ns = int(base.timestamp()) * 10**9 + (i + 1) * 10**9


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops)
def test_camt053_equals_the_ledger_to_the_cent(pg_session_dsn, ops):
    clock = Clock()
    accts = [next(_ids) << 64 for _ in range(3)]
    expected = {a: [0, 0, []] for a in accts}  # before-day balance, day closing, entries
    with Ledger(pg_session_dsn, mac=MAC, migrate=True, clock_ns=clock) as led, \
            psycopg.connect(pg_session_dsn) as conn:
        led.create_accounts([new_account(a, EUR, 1) for a in accts])
        # the ledger's time only moves forward (ts increases per writer)
        for i, (off, kind, src, dst, amount) in enumerate(sorted(ops, key=lambda o: o[0])):
            if src == dst:
                continue
            d, c = accts[src], accts[dst]
            clock.at(off, i)
            tid = next(_ids)
            flags = TransferFlags.PENDING if kind.startswith("pending") else 0
            assert led.create_transfers([Transfer(tid, d, c, amount, EUR, 1, flags)])[0] \
                == "created"
            follow = {"pending_post": TransferFlags.POST_PENDING_TRANSFER,
                      "pending_void": TransferFlags.VOID_PENDING_TRANSFER}.get(kind)
            if follow:
                led.create_transfers([Transfer(next(_ids), flags=follow, pending_id=tid)])
            if kind in ("plain", "pending_post") and off <= 0:
                for acct, sign, credit in ((d, -1, False), (c, 1, True)):
                    e = expected[acct]
                    if off < 0:
                        e[0] += sign * amount
                    else:
                        e[2].append((amount, credit))
        doc = camt053(conn, [(a, m.Account(f"ACCT{a % 10**8}", iban=False), "EUR")
                             for a in accts], DAY, NOW)
        after_day = {a: 0 for a in accts}
        for s, a in zip(doc.statements, accts, strict=True):
            before, _, entries = expected[a]
            assert s.opening_balance_minor == before
            assert [(e.amount_minor, e.credit) for e in s.entries] == entries
            assert s.closing_balance_minor == before + sum(x if c else -x for x, c in entries)
            after_day[a] = s.closing_balance_minor
        # with the day after's bookings added, the closing balance is the ledger's own
        nxt = camt053(conn, [(a, m.Account("X", iban=False), "EUR") for a in accts],
                      DAY + dt.timedelta(days=1), NOW)
        for s, bal in zip(nxt.statements, led.lookup_accounts(accts), strict=True):
            assert s.opening_balance_minor == after_day[bal.id]
            assert s.closing_balance_minor == bal.credits_posted - bal.debits_posted
    c = codec()
    assert c.parse(c.build(doc)) == doc  # XSD-valid, and the model survives the trip


def test_camt054_per_booking(pg_dsn):
    with Ledger(pg_dsn, mac=MAC, migrate=True) as led, psycopg.connect(pg_dsn) as conn:
        led.create_accounts([new_account(1, EUR, 1), new_account(2, EUR, 1)])
        led.create_transfers([Transfer(10, 1, 2, 1234, EUR, 1),
                              Transfer(11, 1, 2, 99, EUR, 1, TransferFlags.PENDING)])
        n = camt054(conn, 10, 2, m.Account("DE89370400440532013000"), "EUR", NOW)
        assert camt054(conn, 11, 2, m.Account("DE89370400440532013000"), "EUR", NOW) is None
    (entry,) = n.notifications[0].entries
    assert (entry.amount_minor, entry.credit) == (1234, True)
    c = codec()
    assert c.parse(c.build(n)) == n
