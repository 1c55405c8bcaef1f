"""Event store guard, MAC chain, replay, and `payswitch ledger verify` (incl. tampering)."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from payswitch.lab.cli import main as cli
from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.store import Ledger, Request
from payswitch.ledger.types import Account, AccountFlags, Event, LedgerError, Transfer
from payswitch.ledger.types import TransferFlags as F

KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
MAC = hmac_sha256(bytes.fromhex(KEY_HEX))
USD = 840
CARD, MERCHANT, FUNDING = 1, 2, 3


def _payments(dsn):
    """Three on-us payments: approved+held, then one posted (partly), one reversed."""
    led = Ledger(dsn, migrate=True, mac=MAC)
    led.create_accounts([Account(CARD, USD, 1, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
                         Account(MERCHANT, USD, 2), Account(FUNDING, USD, 3)])
    led.create_transfers([Transfer(9, FUNDING, CARD, 100_00, USD, 1)])
    for k in range(3):
        pay, hold = 1000 + k, 2000 + k
        led.append_events([Event(3000 + 10 * k, "received", {"mti": "0100"}, payment_id=pay)])
        out = led.submit([Request(
            (Transfer(hold, CARD, MERCHANT, 25_00, USD, 7, F.PENDING, timeout_s=3600),),
            on_success=(Event(3001 + 10 * k, "approved", {"response_code": "00"},
                              payment_id=pay, transfer_id=hold),
                        Event(3002 + 10 * k, "held", {"amount_minor": 2500, "currency": "USD"},
                              payment_id=pay, transfer_id=hold)),
            on_failure=(Event(3003 + 10 * k, "declined", {"response_code": "51"},
                              payment_id=pay),))])
        assert out[0].results == ("created",) and len(out[0].events_written) == 2
    led.submit([Request((Transfer(4000, amount=20_00, flags=F.POST_PENDING_TRANSFER,
                                  pending_id=2000),),
                        on_success=(Event(3004, "posted", {"amount_minor": 2000},
                                          payment_id=1000, transfer_id=4000),))])
    led.submit([Request((Transfer(4001, flags=F.VOID_PENDING_TRANSFER, pending_id=2001),),
                        on_success=(Event(3014, "reversed", {}, payment_id=1001,
                                          transfer_id=4001),))])
    # a decline: the hold fails, only the failure events are written
    out = led.submit([Request(
        (Transfer(2009, CARD, MERCHANT, 999_00, USD, 7, F.PENDING),),
        on_success=(Event(3091, "approved", {}, payment_id=1009, transfer_id=2009),),
        on_failure=(Event(3093, "declined", {"response_code": "51"}, payment_id=1009),))])
    assert out[0].results == ("exceeds_credits",) and len(out[0].events_written) == 1
    return led


def _verify(dsn, *extra):
    return cli(["ledger", "verify", "--dsn", dsn, "--json", *extra])


def test_clean_ledger_verifies(pg_dsn, capsys, monkeypatch):
    _payments(pg_dsn).close()
    monkeypatch.setenv("PAYSWITCH_EVENT_MAC_KEY", KEY_HEX)
    assert _verify(pg_dsn) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ledger_balanced"] is True and report["ok"] is True
    assert report["chain"]["events"] == 12 and report["chain"]["mac_checked"]
    assert cli(["ledger", "verify", "--dsn", pg_dsn]) == 0
    assert "CLEAN" in capsys.readouterr().out
    assert cli(["ledger", "balances", "--dsn", pg_dsn]) == 0
    assert "USD" in capsys.readouterr().out
    monkeypatch.delenv("PAYSWITCH_EVENT_MAC_KEY")
    assert _verify(pg_dsn) == 2  # no key: incomplete, not clean
    assert _verify(pg_dsn, "--no-mac") == 0


def test_replay_rebuilds_payment_state(pg_dsn):
    with _payments(pg_dsn) as led:
        s = led.payment_state(1000)
        assert s.events == ["received", "approved", "held", "posted"]
        assert (s.status, s.hold_id, s.posted_minor, s.held_minor) == ("posted", 2000, 2000, 0)
        assert led.payment_state(1001).status == "reversed"
        assert led.payment_state(1002).status == "held"
        assert led.payment_state(1009).status == "declined"


def test_events_refuse_update_delete_truncate(pg_dsn):
    _payments(pg_dsn).close()
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        for stmt in ("update events set payload = '{}' where seq = 2",
                     "delete from events where seq = 11",
                     "truncate events cascade",
                     "update transfers set amount = 1 where amount = 2500"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)


def test_pan_never_enters_an_event(pg_dsn):
    with Ledger(pg_dsn, migrate=True, mac=MAC) as led, pytest.raises(LedgerError):
        led.append_events([Event(1, "received", {"pan": "4111111111111111"})])


@pytest.mark.parametrize("tamper, expect", [
    ("update events set payload = '{\"response_code\":\"05\"}' where seq = 3", "edited"),
    ("delete from events where seq = 5", "missing"),
    ("delete from events where seq = 12", "chain head"),
    ("update events set seq = 100 where seq = 4", "missing"),
])
def test_tampered_event_is_reported(pg_dsn, capsys, tamper, expect):
    _payments(pg_dsn).close()
    with psycopg.connect(pg_dsn, autocommit=True) as c:  # superuser, bypassing the guard
        c.execute("alter table events disable trigger events_append_only")
        c.execute(tamper)
        c.execute("alter table events enable trigger events_append_only")
    # without the key only structural damage shows; an edit needs the MAC to be seen
    assert _verify(pg_dsn, "--mac-key-env", "NOPE", "--no-mac") == (
        0 if expect == "edited" else 1)
    capsys.readouterr()
    assert cli(["ledger", "verify", "--dsn", pg_dsn, "--json", "--mac-key-file",
                _keyfile(pg_dsn)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["event_chain_intact"] is False
    assert any(expect in p for p in report["chain"]["problems"]), report["chain"]


def test_money_discrepancies_are_reported(pg_dsn, capsys, monkeypatch):
    _payments(pg_dsn).close()
    monkeypatch.setenv("PAYSWITCH_EVENT_MAC_KEY", KEY_HEX)
    with Ledger(pg_dsn) as led:
        # a hold without its approval (written around the switch's API)
        led.create_transfers([Transfer(5000, CARD, MERCHANT, 1, USD, 7, F.PENDING)])
        led.conn.execute("update accounts set credits_posted = credits_posted + 1 where id = %s",
                         (uuid.UUID(int=MERCHANT),))
    assert _verify(pg_dsn) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ledger_balanced"] is False
    assert report["unbalanced_ledgers"] == [USD]
    assert report["account_mismatch_count"] == 1
    assert report["holds_without_approval_count"] == 1
    assert cli(["ledger", "verify", "--dsn", pg_dsn]) == 1
    text = capsys.readouterr().out
    assert "DISCREPANCIES" in text and "[BAD] ledger 840" in text


_KEYFILES: dict[str, str] = {}


def _keyfile(dsn):
    import tempfile

    if dsn not in _KEYFILES:
        f = tempfile.NamedTemporaryFile("w", suffix=".key", delete=False)  # noqa: SIM115
        f.write(KEY_HEX)
        f.close()
        _KEYFILES[dsn] = f.name
    return _KEYFILES[dsn]



def test_verify_expected_voids(pg_dsn, capsys, monkeypatch):
    """An application's ``ledger_expected_voids`` (e.g. the switch's reversed originals):
    each named hold must be voided; one still pending or posted is a discrepancy."""
    _payments(pg_dsn).close()
    monkeypatch.setenv("PAYSWITCH_EVENT_MAC_KEY", KEY_HEX)

    def report() -> dict:
        _verify(pg_dsn)
        return json.loads(capsys.readouterr().out)

    assert report()["expected_voids_checked"] is False  # no such relation: not checked
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("create table ledger_expected_voids (transfer_id uuid, reason text)")
        conn.execute("insert into ledger_expected_voids values (%s, 'reversal'),"
                     " (%s, 'not a hold')", (uuid.UUID(int=2001), uuid.UUID(int=9)))
    r = report()
    assert r["ok"] and r["expected_voids"] == 1 and not r["unvoided_count"]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("insert into ledger_expected_voids values (%s, 'reversal'),"
                     " (%s, 'recovered')", (uuid.UUID(int=2002), uuid.UUID(int=2000)))
    r = report()
    assert not r["ok"] and r["unvoided_count"] == 2, r["unvoided"]
    assert any("pending" in x for x in r["unvoided"])
    assert any("posted" in x for x in r["unvoided"])


def test_batch_rows_and_outbox_notify_written_together(pg_dsn, capsys, monkeypatch):
    """A batch's writes go as one statement: every table still gets its rows, the chain head
    moves to the last event, and a LISTEN session hears the last seq at COMMIT (a WITH
    select nothing reads would be skipped by PostgreSQL, so this catches a lost notify)."""
    led = _payments(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as listener:
        listener.execute("listen payswitch_outbox")
        out = led.submit([Request(
            (Transfer(2100 + k, CARD, MERCHANT, 1_00, USD, 7, F.PENDING, timeout_s=60),),
            on_success=(Event(5000 + k, "approved", {"response_code": "00"},
                              payment_id=1100 + k, transfer_id=2100 + k),
                        Event(5100 + k, "held", {"amount_minor": 100, "currency": "USD"},
                              payment_id=1100 + k, transfer_id=2100 + k)))
            for k in range(3)])
        seqs = [s for o in out for s in o.events_written]
        assert [o.results for o in out] == [("created",)] * 3 and len(seqs) == 6
        heard = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
        assert heard == [str(seqs[-1])]
        rows = listener.execute(
            "select (select count(*) from transfers where id = any(%s::uuid[])), "
            "(select count(*) from pending_transfers where id = any(%s::uuid[]) "
            "and state = 'pending'), (select count(*) from outbox where event_seq = any(%s)), "
            "(select seq from event_chain_head), "
            "(select debits_pending from accounts where id = %s)",
            ([uuid.UUID(int=2100 + k) for k in range(3)],
             [uuid.UUID(int=2100 + k) for k in range(3)], seqs,
             uuid.UUID(int=CARD))).fetchone()
    # the two holds _payments leaves pending (25.00 each: one posted, one voided, one held)
    assert rows == (3, 3, 6, seqs[-1], 25_00 + 3 * 1_00)
    led.close()
    monkeypatch.setenv("PAYSWITCH_EVENT_MAC_KEY", KEY_HEX)
    assert _verify(pg_dsn) == 0, capsys.readouterr().out


_BATCH_TABLES = ("transfers", "failed_transfers", "accounts", "pending_transfers", "events")


def _scans(conn):
    """The tables' seq and index scans, this backend's flushed first (PostgreSQL 15+)."""
    conn.execute("select pg_stat_force_next_flush()")
    return {r[0]: (r[1], r[2]) for r in conn.execute(
        "select relname, seq_scan, coalesce(idx_scan, 0) from pg_stat_user_tables "
        "where relname = any(%s)", (list(_BATCH_TABLES),))}


def test_batches_never_scan_a_table_even_when_planned_empty(pg_dsn):
    """The batch's statements are prepared once per session and keep their plan: one
    made while the tables were empty (analyzed empty, a new database) must still look
    rows up by key, not scan every transfer or event as the tables grow."""
    with Ledger(pg_dsn, migrate=True, mac=MAC) as led:
        led.create_accounts([Account(CARD, USD, 1), Account(MERCHANT, USD, 2)])
        for t in _BATCH_TABLES:
            led.conn.execute(f"analyze {t}")

        def batch(k, n):
            return led.submit([Request(
                (Transfer(10_000 + k * n + j, CARD, MERCHANT, 1, USD, 1, F.PENDING,
                          timeout_s=60),),
                on_success=(Event(50_000 + k * n + j, "held", {"j": j}),))
                for j in range(n)])

        before = _scans(led.conn)
        for k in range(3):  # plans made now, the tables (near) empty
            assert {o.results for o in batch(k, 2)} == {("created",)}
        assert batch(100, 1000)[0].results == ("created",)  # the tables grow
        assert batch(3, 2)[0].results == ("created",)
        after = _scans(led.conn)
        # a post (its pending transfer looked up), a retry (exists) and a duplicate event
        out = led.submit([Request((Transfer(90_000, amount=1,
                                            flags=F.POST_PENDING_TRANSFER, pending_id=10_000),),
                                  on_success=(Event(90_001, "posted", {}),)),
                          Request((Transfer(10_001, CARD, MERCHANT, 1, USD, 1, F.PENDING,
                                            timeout_s=60),),
                                  on_success=(Event(50_001, "held", {"j": 1}),))])
        assert [o.results for o in out] == [("created",), ("exists",)]
        assert [len(o.events_written) for o in out] == [1, 0]
        last = _scans(led.conn)
    assert {t: after[t][0] - before[t][0] for t in _BATCH_TABLES} == dict.fromkeys(
        _BATCH_TABLES, 0)
    assert {t: last[t][0] - after[t][0] for t in _BATCH_TABLES} == dict.fromkeys(
        _BATCH_TABLES, 0)
    assert last["events"][1] > before["events"][1], "no index scan either: test is moot"
