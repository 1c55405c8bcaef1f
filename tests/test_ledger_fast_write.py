"""The one-round-trip batch (``Ledger._submit_fast``) against the usual two (read, then
write): the same operations on two databases, one ledger with the fast path and one
without (``fast=False``, the reads-then-writes path as it was), while another
connection writes to the same ledger between batches (as a second worker process, the
expiry job or clearing would), moving the chain head and the balances the fast path
remembers. Every outcome and every stored row (transfers and their timestamps,
balances, pending states, failures, events with their MACs, outbox, chain head) must
be the same, and the chain must verify. The fast path must have been taken, and must
have missed, in the examples that can make it."""

from __future__ import annotations

import hashlib
import hmac
import itertools

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payswitch.lab import realparts
from payswitch.ledger.store import Ledger, Request
from payswitch.ledger.types import Account, AccountFlags, Event, Transfer, TransferFlags
from payswitch.ledger.verify import verify

KEY = bytes(range(32, 64))
USD, EUR = 840, 978
BANK, ALICE, SHOP, NET, EURO = 1, 2, 3, 4, 5  # ALICE: debits_must_not_exceed_credits
ACCOUNTS = (Account(BANK, USD, 1), Account(ALICE, USD, 2,
                                           AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
            Account(SHOP, USD, 3), Account(NET, USD, 4), Account(EURO, EUR, 5))


def _mac(data: bytes) -> bytes:
    return hmac.new(KEY, data, hashlib.sha256).digest()


def _clock(start: int):
    ticks = itertools.count(start, 1_000_000)
    return lambda: next(ticks)


def _events(tid: int, n: int) -> tuple[Event, ...]:
    # ids from the transfer id: a retried transfer repeats its events (stored already)
    return tuple(Event(tid * 10 + k, ("received", "routed", "approved", "held")[k],
                       {"tid": tid, "k": k}, payment_id=tid) for k in range(n))


ACCT = st.sampled_from((BANK, ALICE, SHOP, NET, EURO))
# (transfer id, debit, credit, amount, kind, events); ids from a small pool, so some
# repeat (exists), some fail (accounts, ledgers, ALICE's limit) and are retried
TRANSFER = st.tuples(st.integers(1, 40), ACCT, ACCT, st.integers(1, 700),
                     st.sampled_from(("pending", "posted", "void", "post")),
                     st.integers(0, 4))
OP = st.one_of(
    st.tuples(st.just("batch"), st.lists(TRANSFER, min_size=1, max_size=4)),
    st.tuples(st.just("events"), st.lists(st.integers(1, 40), min_size=1, max_size=3)),
    st.tuples(st.just("other"), TRANSFER),
)


def _request(op: tuple, base: int = 0) -> Request:
    tid, dr, cr, amount, kind, n = op
    tid += base
    if kind == "void":
        t = Transfer(10_000 + tid, flags=TransferFlags.VOID_PENDING_TRANSFER,
                     pending_id=tid)
    elif kind == "post":
        t = Transfer(20_000 + tid, amount=amount // 2,
                     flags=TransferFlags.POST_PENDING_TRANSFER, pending_id=tid)
    else:
        pending = kind == "pending"
        t = Transfer(tid, dr, cr, amount, USD if EURO not in (dr, cr) else EUR, 1,
                     TransferFlags.PENDING if pending else TransferFlags.NONE, 0,
                     60 if pending else 0)
    return Request((t,), _events(t.id, n), _events(t.id + 500_000, min(n, 1)))


def _dump(conn: psycopg.Connection) -> dict:
    q = {
        "transfers": "select * from transfers order by id",
        "accounts": "select id, ledger, code, flags, debits_pending, debits_posted, "
                    "credits_pending, credits_posted from accounts order by id",
        "pending": "select * from pending_transfers order by id",
        "failed": "select * from failed_transfers order by id",
        "events": "select * from events order by seq",
        "outbox": "select event_seq, topic, sent_at from outbox order by event_seq",
        "head": "select seq, mac from event_chain_head",
    }
    return {k: conn.execute(v).fetchall() for k, v in q.items()}


def _run(dsn: str, ops: list[tuple], fast: bool) -> tuple[list, dict, Ledger]:
    with psycopg.connect(dsn, autocommit=True) as setup:
        from payswitch.ledger.schema import migrate
        migrate(setup)
    led = Ledger(dsn, mac=_mac, clock_ns=_clock(10**18), fast=fast)
    other = Ledger(dsn, mac=_mac, clock_ns=_clock(2 * 10**18), fast=False)
    try:
        assert set(led.create_accounts(ACCOUNTS)) == {"created"}
        funding = Transfer(99_999, BANK, ALICE, 1_000, USD, 1)
        assert led.create_transfers([funding]) == ["created"]
        outcomes = []
        for kind, arg in ops:
            if kind == "batch":
                out = led.submit([_request(t) for t in arg])
            elif kind == "events":
                out = led.submit([Request((), _events(300_000 + i, 2)) for i in arg])
            else:  # another writer: a transfer and its events, ids of its own range
                out = other.submit([_request(arg, 1_000)])
            outcomes.append([(o.results, o.events_written) for o in out])
        with psycopg.connect(dsn) as c:
            report = verify(c, _mac)
            assert (report.ledger_balanced and report.chain.intact
                    and not report.events_without_outbox_count), report.to_text()
            return outcomes, _dump(c), led
    finally:
        led.close()
        other.close()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OP, min_size=1, max_size=12))
def test_fast_batches_write_what_the_two_round_trip_batches_write(pg_admin_dsn, ops):
    with (realparts.scratch_database(pg_admin_dsn) as a,
          realparts.scratch_database(pg_admin_dsn) as b):
        fast_out, fast_rows, fast = _run(a, ops, fast=True)
        slow_out, slow_rows, slow = _run(b, ops, fast=False)
    assert fast_out == slow_out
    assert fast_rows == slow_rows
    assert slow.fast_batches == 0


def test_the_fast_path_is_taken_and_misses_when_another_writer_moved_things(pg_dsn):
    """Under one writer every batch of new holds after the first is fast; a batch after
    another connection moved the chain head, or ALICE's balance (a limit account),
    misses (nothing written by it) and is written the usual way."""
    ops: list[tuple] = [("batch", [(k, ALICE, SHOP, 10, "pending", 4)]) for k in range(1, 5)]
    ops += [("other", (1, BANK, NET, 5, "posted", 1)),  # moves the head
            ("batch", [(5, ALICE, SHOP, 10, "pending", 4)]),  # misses: head
            ("batch", [(6, NET, SHOP, 10, "pending", 0)]),  # usual (after a miss)
            ("batch", [(7, NET, SHOP, 10, "pending", 0)]),  # usual
            ("batch", [(8, NET, SHOP, 10, "pending", 0)]),  # fast: no events, any NET
            ("other", (2, ALICE, NET, 950, "posted", 0)),  # ALICE spends, head stays
            # misses: ALICE's balance. The database's own limit check would not see it:
            # the second transfer gives ALICE more than the first takes
            ("batch", [(9, ALICE, SHOP, 10, "pending", 0), (10, SHOP, ALICE, 100, "posted", 0)]),
            ]
    outcomes, rows, led = _run(pg_dsn, ops, fast=True)
    assert led.fast_misses == 2
    assert led.fast_batches == 4  # 2, 3, 4 (1: accounts never seen in a batch) and 8
    # 9 was refused the usual way: ALICE had 1,000, 50 held and 950 spent
    assert outcomes[-1] == [(("exceeds_credits",), ()), (("created",), ())]
    assert outcomes[5][0][0] == ("created",) and len(outcomes[5][0][1]) == 4
