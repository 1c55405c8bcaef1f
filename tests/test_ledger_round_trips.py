"""Round trips to PostgreSQL per ledger batch, counted at the protocol: libpq traces every
message of the ledger's connection, and each round trip ends with exactly one
ReadyForQuery from the server (after a Sync, or after a simple Query's last statement).

A batch is ``begin; <reads>`` and ``<writes>; commit``: two, whatever it holds (six or
seven before: BEGIN, transfers, accounts, pending states, chain head, write, COMMIT).
A batch of new holds on accounts and a chain head the connection's last commit left is
one: ``begin; <lock>; <guarded writes>; commit`` (``Ledger._submit_fast``); when the
guard finds the connection's knowledge stale it is three (the fast try, then the two)."""

from __future__ import annotations

import os
import tempfile

import psycopg

from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.store import Ledger, Request
from payswitch.ledger.types import Account, AccountFlags, Event, Transfer, TransferFlags

MAC = hmac_sha256(b"round-trip-key-0123456789")
USD = 840
BANK, ALICE, SHOP = 1, 2, 3


class Traced:
    """libpq's trace of one connection, read back as a count of round trips."""

    def __init__(self, conn: psycopg.Connection) -> None:
        fd, path = tempfile.mkstemp()
        os.unlink(path)
        self.fd, self.conn = fd, conn
        conn.pgconn.trace(fd)

    def round_trips(self) -> int:
        self.conn.pgconn.untrace()  # flushes libpq's buffer
        text = os.pread(self.fd, os.fstat(self.fd).st_size, 0).decode()
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.conn.pgconn.trace(self.fd)
        return sum(1 for line in text.splitlines()
                   if line.split("\t")[1:4:2] == ["B", "ReadyForQuery"])

    def close(self) -> None:
        self.conn.pgconn.untrace()
        os.close(self.fd)


def _hold(i: int, amount: int = 100) -> Transfer:
    return Transfer(i, ALICE, SHOP, amount, USD, 1, TransferFlags.PENDING, 0, 60)


def _events(i: int) -> tuple[Event, ...]:
    return tuple(Event(i * 10 + k, t, {"k": k}, payment_id=i)
                 for k, t in enumerate(("received", "routed", "approved", "held")))


def test_a_ledger_batch_is_two_round_trips_whatever_it_holds(pg_dsn):
    with Ledger(pg_dsn, migrate=True, mac=MAC) as led:
        assert set(led.create_accounts([
            Account(BANK, USD, 1),
            Account(ALICE, USD, 2, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
            Account(SHOP, USD, 3)])) == {"created"}
        assert led.create_transfers([Transfer(9, BANK, ALICE, 10_000, USD, 1)]) == ["created"]
        trace = Traced(led.conn)
        try:
            # holds with their events (the switch's authorizations), one over the balance
            out = led.submit([Request((_hold(100 + k),), _events(100 + k)) for k in range(5)]
                             + [Request((_hold(199, 10**6),), (), _events(199))])
            assert [o.results for o in out] == [("created",)] * 5 + [("exceeds_credits",)]
            assert sum(len(o.events_written) for o in out) == 6 * 4
            assert trace.round_trips() == 2
            # voids and posts of those holds: the pending transfers' accounts and states
            out = led.submit([
                Request((Transfer(200, flags=TransferFlags.VOID_PENDING_TRANSFER,
                                  pending_id=100),), (Event(2000, "reversed", {}),)),
                Request((Transfer(201, amount=50, flags=TransferFlags.POST_PENDING_TRANSFER,
                                  pending_id=101),), (Event(2001, "posted", {}),))])
            assert [o.results for o in out] == [("created",), ("created",)]
            assert trace.round_trips() == 2
            # the same again (a retry): every transfer exists, every event is stored
            # (tried in one round trip first: the hold is there, so the write fails)
            out = led.submit([Request((_hold(100),), _events(100))])
            assert out[0].results == ("exists",) and out[0].events_written == ()
            assert trace.round_trips() == 3 and led.fast_misses == 1
            # after a miss the next two batches go the usual way: events alone;
            # transfers alone
            assert len(led.append_events([Event(3000, "received", {})])) == 1
            assert trace.round_trips() == 2
            assert led.create_transfers([_hold(300)]) == ["created"]
            assert trace.round_trips() == 2
            # then one round trip again: holds, events alone, transfers alone
            out = led.submit([Request((_hold(500 + k),), _events(500 + k)) for k in range(3)])
            assert [o.results for o in out] == [("created",)] * 3
            assert trace.round_trips() == 1
            assert len(led.append_events([Event(3001, "received", {})])) == 1
            assert trace.round_trips() == 1
            assert led.create_transfers([_hold(301)]) == ["created"]
            assert trace.round_trips() == 1
            assert led.fast_batches == 3 and led.fast_misses == 1
        finally:
            trace.close()
        # what those round trips did is in the tables
        row = led.conn.execute(
            "select (select debits_pending from accounts where id = %s), "
            "(select debits_posted from accounts where id = %s), "
            "(select count(*) from events), (select seq from event_chain_head), "
            "(select string_agg(state, ',' order by id) from pending_transfers)",
            (_u(ALICE), _u(ALICE))).fetchone()
    # pending: 101 posted, 100 voided; 102-104, 300, 301 and 500-502 held; 199 refused
    assert row == (8 * 100, 50, 6 * 4 + 2 + 1 + 3 * 4 + 1, 40,
                   "voided,posted,pending,pending,pending,pending,pending,pending,"
                   "pending,pending")


def test_a_batch_that_fails_between_begin_and_commit_leaves_no_transaction(pg_dsn):
    """BEGIN travels with the reads: when the writes fail, the batch is rolled back and the
    connection is ready for the next one (not stuck in a failed transaction)."""
    with Ledger(pg_dsn, migrate=True, mac=MAC) as led:
        assert set(led.create_accounts([Account(BANK, USD, 1), Account(ALICE, USD, 2),
                                        Account(SHOP, USD, 3)])) == {"created"}
        led.conn.execute("create or replace function refuse() returns trigger language "
                         "plpgsql as $$ begin raise exception 'refused'; end $$")
        led.conn.execute("create trigger refuse before insert on outbox "
                         "for each row execute function refuse()")
        try:
            led.submit([Request((_hold(400),), _events(400))])
        except Exception as e:
            assert "refused" in str(e)
        else:
            raise AssertionError("the refused batch committed")
        assert led.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        led.conn.execute("drop trigger refuse on outbox")
        assert led.lookup_transfers([400]) == []
        out = led.submit([Request((_hold(400),), _events(400))])
        assert out[0].results == ("created",) and len(out[0].events_written) == 4
        # the refused batch was the connection's first: its PREPAREs ran, its write's
        # name was not kept; the batches after it prepare and reuse their own
        for k in range(3):
            out = led.submit([Request((_hold(401 + k),), _events(401 + k))])
            assert out[0].results == ("created",) and len(out[0].events_written) == 4
        names = led.conn.execute("select count(*) from pg_prepared_statements "
                                 "where name like 'payswitch_ledger_%'").fetchone()
        # one read, the refused write's, one write (the batch after the refused one:
        # nothing kept from a batch that failed), then the fast path's lock and write
        assert names == (5,) and led.fast_batches == 3


def _u(i: int) -> str:
    return f"{i:032x}"


def test_array_literals_round_trip_through_postgresql(pg_dsn):
    """The batch's values are literals built by the store (``_lit`` over the array
    literals: quotes, backslashes, braces, NULL as a word, non-ASCII, uuids from ints),
    sent with no parameters: PostgreSQL reads back exactly them."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from payswitch.ledger.store import _ba, _lit, _ta, _ua

    with Ledger(pg_dsn) as led:  # its connection: standard_conforming_strings on
        cur = led.conn.cursor()

        def back(texts: list[str], blobs: list[bytes], one: str, raw: bytes,
                 ids: list[int | None]) -> tuple:
            cur.execute(f"select {_lit(_ta(texts))}::text[], {_lit(_ba(blobs))}::bytea[], "
                        f"{_lit(one)}, {_lit(raw)}, {_lit(_ua(ids))}::uuid[]", prepare=False)
            *row, uuids = cur.fetchone()
            return (*row, [u and u.int for u in uuids])

        # any text PostgreSQL can hold: no NUL, and UTF-8 (a lone surrogate cannot be sent
        # at all, as a literal or as a parameter; event payloads are ASCII JSON anyway)
        chars = st.characters(codec="utf-8", exclude_characters="\x00")

        @settings(max_examples=200, deadline=None)
        @given(st.lists(st.text(chars)), st.lists(st.binary(max_size=40)),
               st.text(chars), st.binary(max_size=40),
               st.lists(st.none() | st.integers(1, 2**128 - 1)))
        def check(texts: list[str], blobs: list[bytes], one: str, raw: bytes,
                  ids: list[int | None]) -> None:
            assert back(texts, blobs, one, raw, ids) == (texts, blobs, one, raw, ids)

        check()

        @settings(max_examples=50, deadline=None)
        @given(st.lists(st.binary(min_size=32, max_size=32), min_size=1))
        def check_macs(macs: list[bytes]) -> None:  # _ba's one-hex-call path
            assert back([], macs, "", b"", [])[1] == macs

        check_macs()
        odd = ["NULL", "", '{a,"b"}', 'x\\"y', " s ", "it's", "\\'; drop table x; --"]
        assert back(odd, [b"", b"\\x00'"], "'\\", b"'", [1, 2**128 - 1]) == (
            odd, [b"", b"\\x00'"], "'\\", b"'", [1, 2**128 - 1])


def test_uuid_literal_from_bytes_is_the_one_from_ints():
    """``_ub`` (the events' ids as the 16 bytes their MAC inputs hold) spells the same
    uuid[] literal as ``_ua`` of the ints, NULL for none (0), for any ids."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from payswitch.ledger.store import _ua, _ub

    @settings(max_examples=300)
    @given(st.lists(st.none() | st.just(0) | st.integers(1, 2**128 - 1)
                    | st.integers(1, 2**64)))
    def check(ids: list[int | None]) -> None:
        assert _ub([(i or 0).to_bytes(16, "big") for i in ids]) == _ua(ids)

    check()


def test_bigint_literals_round_trip_through_postgresql(pg_dsn):
    """``_ia``'s bigint[] literal (one ``map`` when no element is NULL, else element by
    element, a NULL first or further on): PostgreSQL reads back exactly the ints."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from payswitch.ledger.store import _ia, _lit

    with Ledger(pg_dsn) as led:
        cur = led.conn.cursor()

        @settings(max_examples=200, deadline=None)
        @given(st.lists(st.none() | st.integers(-2**63, 2**63 - 1) | st.booleans()))
        def check(xs: list[int | None]) -> None:
            cur.execute(f"select {_lit(_ia(xs))}::bigint[]", prepare=False)
            assert cur.fetchone()[0] == [None if x is None else int(x) for x in xs]

        check()
