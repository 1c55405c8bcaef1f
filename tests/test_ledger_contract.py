"""The switch-facing contract: import rule, and an authorization round trip that verifies."""

from __future__ import annotations

import ast
import pathlib

import psycopg
import trio

import payswitch.ledger as L

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ledger_imports_only_codecs_from_payswitch():
    for path in (ROOT / "ledger").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                if n.startswith("payswitch"):
                    assert n.startswith(("payswitch.codecs", "payswitch.ledger")), (path.name, n)


def test_authorization_flow_through_writer_verifies(pg_dsn):
    mac = L.hmac_sha256(b"contract-test-key-0123456789")
    with L.Ledger(pg_dsn, migrate=True) as led:
        card, merchant, bank = L.new_id(), L.new_id(), L.new_id()
        assert set(led.create_accounts([
            L.new_account(card, 840, 10, debits_must_not_exceed_credits=True),
            L.new_account(merchant, 840, 20), L.new_account(bank, 840, 30)])) == {"created"}
        assert led.create_transfers([L.Transfer(L.new_id(), bank, card, 50_00, 840, 1)]) == [
            "created"]
    writer = L.BatchWriter(pg_dsn, mac=mac)
    seen = {}

    async def authorize(amount):
        pay, hold = L.new_id(), L.new_id()
        ok, ko = L.authorization_events(
            payment_id=pay, hold_id=hold, approved_event_id=L.new_id(),
            held_event_id=L.new_id(), declined_event_id=L.new_id(), amount_minor=amount,
            currency="USD", declined={"response_code": "51"})
        out = await writer.hold(hold_id=hold, debit_account_id=card, credit_account_id=merchant,
                                amount_minor=amount, ledger=840, code=7, timeout_s=600,
                                on_success=ok, on_failure=ko)
        seen[amount] = (out.results[0], pay, hold)

    async def main():
        async with trio.open_nursery() as n:
            await n.start(writer.run)
            async with trio.open_nursery() as c:
                for amount in (10_00, 20_00, 30_00):
                    c.start_soon(authorize, amount)
            # capture the approved ones: post one partly, void another
            approved = sorted((a, h) for a, (r, _, h) in seen.items() if r == "created")
            assert len(approved) == 2  # any two of 10, 20, 30 fit in 50; never all three
            await writer.post(post_id=L.new_id(), pending_id=approved[0][1],
                              amount_minor=approved[0][0] - 1)
            await writer.void(void_id=L.new_id(), pending_id=approved[1][1])
            n.cancel_scope.cancel()

    trio.run(main)
    declined = [pay for r, pay, _ in seen.values() if r == "exceeds_credits"]
    assert len(declined) == 1
    with L.Ledger(pg_dsn) as led:
        assert led.payment_state(declined[0]).status == "declined"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        report = L.verify(conn, mac)
    assert report.ok, report.to_text()
