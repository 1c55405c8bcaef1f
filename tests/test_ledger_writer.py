"""The batched writer under many concurrent trio tasks, against real PostgreSQL."""

from __future__ import annotations

import pytest
import trio

from payswitch.ledger import events as ev
from payswitch.ledger import money
from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.schema import migrate
from payswitch.ledger.store import Ledger, Request
from payswitch.ledger.types import (
    Account,
    AccountFlags,
    Event,
    LedgerError,
    Transfer,
    TransferFlags,
)
from payswitch.ledger.writer import BatchWriter, WriterConfig

MAC = hmac_sha256(b"test-key-0123456789abcdef")
USD, EUR = 840, 978
BANK, ALICE, BOB = 1, 2, 3


def _setup(dsn, extra=()):
    with Ledger(dsn, migrate=True) as led:
        res = led.create_accounts([
            Account(BANK, USD, 1),
            Account(ALICE, USD, 2, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
            Account(BOB, USD, 2), *extra])
        assert set(res) == {"created"}
        assert led.create_transfers([Transfer(10, BANK, ALICE, 1000, USD, 1)]) == ["created"]


def test_many_tasks_each_get_their_own_result(pg_dsn):
    _setup(pg_dsn)
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(max_batch=500, max_wait_ms=5))
    n = 300
    results: dict[int, str] = {}

    async def one(i):
        # ALICE has 1000: the first 100 transfers of 10 fit, the rest exceed credits
        out = await writer.create_transfers(
            [Transfer(1000 + i, ALICE, BOB, 10, USD, 1)],
            on_success=[Event(50_000 + i, "posted", {"i": i}, payment_id=i + 1)])
        results[i] = out.results[0]
        if out.results[0] == "created":
            assert len(out.events_written) == 1

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            async with trio.open_nursery() as callers:
                for i in range(n):
                    callers.start_soon(one, i)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert sorted(results) == list(range(n))
    assert list(results.values()).count("created") == 100
    assert list(results.values()).count("exceeds_credits") == n - 100
    assert writer.batches < n / 3  # they were really batched
    with Ledger(pg_dsn) as led:
        a, b = led.lookup_accounts([ALICE, BOB])
        assert a.debits_posted == 1000 and b.credits_posted == 1000
        created = [i for i, r in results.items() if r == "created"]
        assert len(led.lookup_transfers(1000 + i for i in created)) == 100
        n_events = led.conn.execute("select count(*) from events").fetchone()[0]
        assert n_events == 100


def test_duplicate_id_in_one_batch_and_failing_chain_isolated(pg_dsn):
    _setup(pg_dsn)
    with Ledger(pg_dsn) as led:
        reqs = [
            Request((Transfer(20, ALICE, BOB, 5, USD, 1),)),
            Request((Transfer(20, ALICE, BOB, 5, USD, 1),)),  # same id again: exists
            Request((Transfer(20, ALICE, BOB, 6, USD, 1),)),  # same id, other amount
            Request((Transfer(21, BANK, BOB, 5, USD, 1, TransferFlags.LINKED),
                     Transfer(22, ALICE, BOB, 5000, USD, 1))),  # chain fails as a unit
            Request((Transfer(23, ALICE, BOB, 7, USD, 1),)),  # unaffected
            Request((Transfer(24, BANK, BOB, 1, USD, 1, TransferFlags.LINKED),)),  # open
        ]
        out = led.submit(reqs)
        assert [list(o.results) for o in out] == [
            ["created"], ["exists"], ["exists_with_different_amount"],
            ["linked_event_failed", "exceeds_credits"], ["created"],
            ["linked_event_chain_open"]]
        a, b = led.lookup_accounts([ALICE, BOB])
        assert a.debits_posted == 12 and b.credits_posted == 12
        assert led.lookup_transfers([21, 22, 24]) == []
        # the chain's ids were not recorded as failed: a corrected retry succeeds
        assert led.create_transfers([Transfer(21, BANK, BOB, 5, USD, 1, TransferFlags.LINKED),
                                     Transfer(22, ALICE, BOB, 50, USD, 1)]) == [
            "created", "created"]


def test_hold_post_void_and_expiry_through_writer(pg_dsn):
    _setup(pg_dsn)
    clock = [10**18]
    writer = BatchWriter(pg_dsn, mac=MAC, clock_ns=lambda: clock[0],
                         config=WriterConfig(expiry_interval_s=0.05))
    out: dict[str, object] = {}

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            h = await writer.hold(hold_id=100, debit_account_id=ALICE, credit_account_id=BOB,
                                  amount_minor=600, ledger=USD, code=7, timeout_s=60)
            out["hold"] = h.results
            out["hold2"] = (await writer.hold(
                hold_id=101, debit_account_id=ALICE, credit_account_id=BOB, amount_minor=600,
                ledger=USD, code=7, timeout_s=60)).results  # pending counts against limit
            out["post"] = (await writer.post(post_id=102, pending_id=100,
                                             amount_minor=450)).results
            out["repost"] = (await writer.post(post_id=103, pending_id=100)).results
            out["void"] = (await writer.void(void_id=104, pending_id=100)).results
            await writer.hold(hold_id=105, debit_account_id=ALICE, credit_account_id=BOB,
                              amount_minor=100, ledger=USD, code=7, timeout_s=2)
            clock[0] += 3 * 10**9
            await nursery.start(writer.run_expiry)
            for _ in range(100):
                await trio.sleep(0.02)
                with Ledger(pg_dsn) as led:
                    if led.pending_state(105) == "expired":
                        break
            out["late_post"] = (await writer.post(post_id=106, pending_id=105)).results
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert out["hold"] == ("created",)
    assert out["hold2"] == ("exceeds_credits",)
    assert out["post"] == ("created",)
    assert out["repost"] == ("pending_transfer_already_posted",)
    assert out["void"] == ("pending_transfer_already_posted",)
    assert out["late_post"] == ("pending_transfer_expired",)
    with Ledger(pg_dsn) as led:
        a, = led.lookup_accounts([ALICE])
        assert (a.debits_pending, a.debits_posted, a.credits_posted) == (0, 450, 1000)


def test_fx_legs_keep_each_ledger_balanced(pg_dsn):
    fx_usd, fx_eur, card_eur, merchant_usd = 40, 41, 42, 43
    _setup(pg_dsn, extra=[Account(fx_usd, USD, 9), Account(fx_eur, EUR, 9),
                          Account(card_eur, EUR, 2), Account(merchant_usd, USD, 3)])
    usd = 2599  # merchant amount, USD cents
    eur = money.convert(usd, "USD", "EUR", money.rate_from_de10("60921458"))  # 0.921458
    assert eur == 2395  # 23.94869... HALF_EVEN at 2 decimals
    legs = money.fx_legs(first_id=200, second_id=201, payer_account_id=card_eur,
                         payer_fx_position_id=fx_eur, payee_fx_position_id=fx_usd,
                         payee_account_id=merchant_usd, payer_amount_minor=eur,
                         payer_ledger=EUR, payee_amount_minor=usd, payee_ledger=USD, code=5)
    with Ledger(pg_dsn) as led:
        assert led.create_transfers(list(legs)) == ["created", "created"]
        post = [Transfer(202, flags=TransferFlags.POST_PENDING_TRANSFER | TransferFlags.LINKED,
                         pending_id=200),
                Transfer(203, flags=TransferFlags.POST_PENDING_TRANSFER, pending_id=201)]
        assert led.create_transfers(post) == ["created", "created"]
        rows = led.conn.execute(
            "select ledger, sum(debits_posted) - sum(credits_posted), "
            "sum(debits_pending) - sum(credits_pending) from accounts group by ledger"
        ).fetchall()
        assert all(d == 0 and p == 0 for _, d, p in rows)
        ce, = led.lookup_accounts([card_eur])
        assert ce.debits_posted == eur


def test_migrate_is_idempotent(pg_dsn):
    with Ledger(pg_dsn, migrate=True) as led:
        migrate(led.conn)
        migrate(led.conn)
        assert led.conn.execute("select max(version) from ledger_schema_version").fetchone() == (
            1,)


def test_a_bad_event_fails_only_its_caller(pg_dsn):
    _setup(pg_dsn)
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(max_wait_ms=20))
    out = {}

    async def good(i):
        out[i] = (await writer.create_transfers(
            [Transfer(600 + i, BANK, BOB, 1, USD, 1)],
            on_success=[Event(700 + i, "posted", {"i": i})])).results

    async def bad():
        try:
            await writer.create_transfers([Transfer(650, BANK, BOB, 1, USD, 1)],
                                          on_success=[Event(750, "posted",
                                                            {"pan": "4111111111111111"})])
        except LedgerError as e:
            out["bad"] = str(e)

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            async with trio.open_nursery() as c:
                for i in range(5):
                    c.start_soon(good, i)
                c.start_soon(bad)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert [out[i] for i in range(5)] == [("created",)] * 5
    assert "PAN" in out["bad"]
    with Ledger(pg_dsn) as led:
        assert led.lookup_transfers([650]) == []


def test_duplicates_and_a_failing_chain_in_one_writer_batch(pg_dsn):
    """Concurrent callers land in one batch (long max_wait): a duplicate id answers exists
    to exactly one of them, a failing chain fails alone."""
    _setup(pg_dsn)
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(max_wait_ms=200))
    out = {}

    async def call(name, transfers):
        out[name] = (await writer.create_transfers(transfers)).results

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            async with trio.open_nursery() as c:
                c.start_soon(call, "a", [Transfer(30, ALICE, BOB, 5, USD, 1)])
                c.start_soon(call, "b", [Transfer(30, ALICE, BOB, 5, USD, 1)])
                c.start_soon(call, "chain", [
                    Transfer(31, BANK, BOB, 5, USD, 1, TransferFlags.LINKED),
                    Transfer(32, ALICE, BOB, 10_000, USD, 1)])
                c.start_soon(call, "c", [Transfer(33, ALICE, BOB, 7, USD, 1)])
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert writer.batches == 1
    assert sorted([out["a"][0], out["b"][0]]) == ["created", "exists"]
    assert out["chain"] == ("linked_event_failed", "exceeds_credits")
    assert out["c"] == ("created",)
    with Ledger(pg_dsn) as led:
        a, = led.lookup_accounts([ALICE])
        assert a.debits_posted == 12


def test_retried_chain_counts_as_done(pg_dsn):
    _setup(pg_dsn)
    chain = (Transfer(40, BANK, BOB, 5, USD, 1, TransferFlags.LINKED),
             Transfer(41, ALICE, BOB, 5, USD, 1))
    with Ledger(pg_dsn, mac=MAC) as led:
        def req():
            return Request(chain, on_success=(Event(900, "posted", {}),),
                           on_failure=(Event(901, "declined", {}),))
        first, = led.submit([req()])
        again, = led.submit([req()])
        assert first.results == ("created", "created") and first.ok
        assert again.results == ("exists", "linked_event_failed") and again.ok
        assert again.events_written == ()  # nothing new, and no decline
        types = [r[0] for r in led.conn.execute("select type from events order by seq")]
        assert types == ["posted"]


def test_texts_given_by_the_caller_are_stored_and_still_checked(pg_dsn):
    """A payload given as its text is what the event row stores (and what its MAC
    covers); one that holds a clear PAN is refused all the same, through the writer and
    through ``Ledger.submit``, and nothing of that request is written."""
    _setup(pg_dsn)
    writer = BatchWriter(pg_dsn, mac=MAC, config=WriterConfig(max_wait_ms=1))
    e = Event(800, "posted", '{"i":1}', payment_id=9)
    pan = Event(801, "posted", '{"ref":"4111111111111111"}', payment_id=9)
    out = {}

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            out["ok"] = await writer.create_transfers(
                [Transfer(660, BANK, BOB, 1, USD, 1)], [e])
            try:
                await writer.create_transfers([Transfer(661, BANK, BOB, 1, USD, 1)], [pan])
            except LedgerError as err:
                out["pan"] = str(err)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert out["ok"].results == ("created",) and "PAN" in out["pan"]
    with Ledger(pg_dsn, mac=MAC) as led:
        with pytest.raises(LedgerError, match="PAN"):
            led.submit([Request((Transfer(662, BANK, BOB, 1, USD, 1),), (pan,))])
        assert [s.payload for s in led.payment_events(9)] == ['{"i":1}']
        assert led.lookup_transfers([661, 662]) == []
        (stored,) = led.payment_events(9)
        assert ev.check_event(stored, MAC) == ev.SEAL  # alone in its batch: sealed
