"""The event chain sealed once per batch: every event but a batch's last is a SHA-256
link, the last one an HMAC seal. ``verify`` must still see any change, deletion,
insertion or reordering, even by someone who rewrites the links (SHA-256 needs no key),
and chains written one MAC per event (before) must keep verifying."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.lab.cli import main as cli
from payswitch.ledger import events as ev
from payswitch.ledger.store import Ledger, Request
from payswitch.ledger.types import Event
from payswitch.ledger.verify import ChainCheck, ChainReport

KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
KEY = bytes.fromhex(KEY_HEX)


def _hmac(data: bytes) -> bytes:  # the standard library's HMAC, not the ledger's helper
    return hmac.new(KEY, data, hashlib.sha256).digest()


def _fields(e: ev.StoredEvent) -> tuple:
    return (e.seq, e.id, e.type, e.payment_id, e.transfer_id, e.occurred_at_us, e.payload,
            e.prev_mac)


def _link(e: ev.StoredEvent) -> bytes:  # what anyone can compute: no key
    return hashlib.sha256(ev.mac_input(*_fields(e), ev.LINK_TAG)).digest()


def _events(n: int, base: int = 1) -> list[Event]:
    return [Event(base + k, ("received", "routed", "approved", "held")[k % 4],
                  {"k": k, "amount_minor": 100 + k}, payment_id=1000 + k // 4,
                  transfer_id=(2000 + k // 4) if k % 4 >= 2 else None,
                  occurred_at_ns=1_700_000_000_000_000_000 + k * 1000)
            for k in range(n)]


def _build(sizes: list[int]) -> tuple[list[ev.StoredEvent], int]:
    """A chain written in batches of ``sizes``; returns it and the MAC calls made."""
    calls = []

    def mac(data: bytes) -> bytes:
        calls.append(data)
        return _hmac(data)

    rows: list[ev.StoredEvent] = []
    todo = _events(sum(sizes))
    for n in sizes:
        prev = rows[-1].mac if rows else ev.GENESIS_MAC
        rows += ev.chain(todo[len(rows):len(rows) + n], len(rows) + 1, prev, mac, 0)
    return rows, len(calls)


def _check(rows: list[ev.StoredEvent], head: tuple[int, bytes] | None) -> ChainReport:
    report = ChainReport()
    check = ChainCheck(report, _hmac)
    for e in rows:
        check.event(e)
    check.end(head)
    return report


def _head(rows: list[ev.StoredEvent]) -> tuple[int, bytes]:
    return (rows[-1].seq, rows[-1].mac) if rows else (0, ev.GENESIS_MAC)


def _relink(rows: list[ev.StoredEvent], start: int, keep_seals: bool) -> list[ev.StoredEvent]:
    """The attacker's repair after a change at ``start``: renumbers and rewrites every
    later event's prev_mac and link hash (no key needed); a seal is either left as it
    was (``keep_seals``) or replaced by a link hash, since a new seal needs the key."""
    out = rows[:start]
    for k, e in enumerate(rows[start:], start):
        prev = out[-1].mac if out else ev.GENESIS_MAC
        e = dataclasses.replace(e, seq=k + 1, prev_mac=prev)
        sealed = ev.check_event(e, _hmac) == ev.SEAL
        out.append(e if keep_seals and sealed else dataclasses.replace(e, mac=_link(e)))
    return out


@given(st.lists(st.integers(1, 6), min_size=1, max_size=8))
def test_one_mac_per_batch_and_the_chain_verifies(sizes):
    rows, calls = _build(sizes)
    assert calls == len(sizes)
    report = _check(rows, _head(rows))
    assert report.intact, report.problems
    # each batch's last event is an HMAC of its v1 input, every other one a SHA-256 link
    ends = {sum(sizes[:k + 1]) for k in range(len(sizes))}
    for e in rows:
        want = _hmac(ev.mac_input(*_fields(e))) if e.seq in ends else _link(e)
        assert e.mac == want


_EDITS = {
    "payload": lambda e: dataclasses.replace(e, payload=e.payload.replace("}", ',"x":1}')),
    "type": lambda e: dataclasses.replace(e, type="declined" if e.type != "declined"
                                          else "approved"),
    "payment_id": lambda e: dataclasses.replace(e, payment_id=(e.payment_id or 0) + 1),
    "transfer_id": lambda e: dataclasses.replace(e, transfer_id=(e.transfer_id or 0) + 1),
    "occurred_at": lambda e: dataclasses.replace(e, occurred_at_us=e.occurred_at_us + 1),
    "id": lambda e: dataclasses.replace(e, id=e.id + 10_000),
}


@settings(max_examples=300)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.data())
def test_any_tampering_is_seen_even_with_the_links_rewritten(sizes, data):
    rows, _ = _build(sizes)
    n = len(rows)
    op = data.draw(st.sampled_from(["edit", "delete", "insert", "swap"]))
    # a change before the newest event (removing newest events only: see the next test)
    i = data.draw(st.integers(0, n - 1 if op in ("edit", "insert") else n - 2)) \
        if n > 1 or op in ("edit", "insert") else None
    if i is None:
        return
    bad = list(rows)
    if op == "edit":
        bad[i] = _EDITS[data.draw(st.sampled_from(sorted(_EDITS)))](bad[i])
    elif op == "delete":
        del bad[i]
    elif op == "insert":
        copy = data.draw(st.sampled_from(rows))
        bad.insert(i, dataclasses.replace(copy, id=copy.id + 50_000))
    else:
        j = data.draw(st.integers(i + 1, n - 1))
        bad[i], bad[j] = bad[j], bad[i]
    if data.draw(st.booleans()):  # the attacker repairs what needs no key
        bad = _relink(bad, i, keep_seals=data.draw(st.booleans()))
    head = _head(bad) if data.draw(st.booleans()) else _head(rows)
    report = _check(bad, head)
    assert not report.intact


@given(st.lists(st.integers(1, 6), min_size=2, max_size=6), st.data())
def test_removed_newest_events_are_seen_unless_a_whole_batch(sizes, data):
    """Dropping the newest events and moving the head back is seen when the new newest
    event is a link; dropping whole batches is what a chain with a head row cannot see
    (nor could it with one MAC per event): the database's privileges guard against it."""
    rows, _ = _build(sizes)
    keep = data.draw(st.integers(1, len(rows) - 1))
    ends = {sum(sizes[:k + 1]) for k in range(len(sizes))}
    report = _check(rows[:keep], _head(rows[:keep]))
    assert report.intact == (keep in ends)
    if not report.intact:
        assert any("not sealed" in p for p in report.problems)


def test_a_chain_of_one_mac_per_event_still_verifies():
    """Before batches were sealed every event was HMAC(key, v1 input): a chain of
    one-event batches. Built here with the standard library alone."""
    rows: list[ev.StoredEvent] = []
    prev = ev.GENESIS_MAC
    for k, e in enumerate(_events(9)):
        s = ev.StoredEvent(k + 1, e.id, e.type, e.payment_id, e.transfer_id,
                           e.occurred_at_ns // 1000, json.dumps(e.payload, sort_keys=True,
                                                                separators=(",", ":")),
                           prev, b"")
        s = dataclasses.replace(s, mac=_hmac(ev.mac_input(*_fields(s))))
        rows.append(s)
        prev = s.mac
    assert _check(rows, _head(rows)).intact
    wrong_key = ChainReport()
    check = ChainCheck(wrong_key, ev.hmac_sha256(bytes(32)))
    for e in rows:
        check.event(e)
    check.end(_head(rows))
    assert not wrong_key.intact


# -- in PostgreSQL ------------------------------------------------------------------------

def _tamper(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:  # superuser, bypassing the guard
        c.execute("alter table events disable trigger events_append_only")
        for s in statements:
            c.execute(s)
        c.execute("alter table events enable trigger events_append_only")


def _verify(dsn: str, capsys, tmp_path) -> dict:
    key = tmp_path / "event-mac.key"
    key.write_text(KEY_HEX)
    capsys.readouterr()
    cli(["ledger", "verify", "--dsn", dsn, "--json", "--mac-key-file", str(key)])
    return json.loads(capsys.readouterr().out)


def _written(dsn: str) -> list[int]:
    """Three batches: 8 events in two requests, then 3, then 1 (the seals: 8, 11, 12)."""
    calls = []

    def mac(data: bytes) -> bytes:
        calls.append(1)
        return _hmac(data)

    todo = _events(12)
    with Ledger(dsn, migrate=True, mac=mac) as led:
        led.submit([Request((), tuple(todo[:4])), Request((), tuple(todo[4:8]))])
        led.submit([Request((), tuple(todo[8:11]))])
        led.append_events(todo[11:])
    return calls


def test_a_batch_costs_one_mac_and_verifies(pg_dsn, capsys, tmp_path):
    assert _written(pg_dsn) == [1, 1, 1]
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute("select seq, id, type, payment_id, transfer_id, occurred_at, "
                         "payload, prev_mac, mac from events order by seq").fetchall()
    for seq, eid, t, pid, tid, at, payload, pm, m in rows:
        s = ev.StoredEvent(seq, eid.int, t, pid and pid.int, tid and tid.int,
                           ev.us_from_datetime(at), payload, bytes(pm), bytes(m))
        assert s.mac == (_hmac(ev.mac_input(*_fields(s))) if seq in (8, 11, 12)
                         else _link(s))
    report = _verify(pg_dsn, capsys, tmp_path)
    # (not "ok": these events' approvals name no hold; the chain is what is tested here)
    assert report["event_chain_intact"] is True and report["chain"]["mac_checked"] is True
    assert report["chain"]["events"] == 12


def test_edited_link_in_postgresql_is_seen(pg_dsn, capsys, tmp_path):
    _written(pg_dsn)
    _tamper(pg_dsn, "update events set payload = '{\"k\":99}' where seq = 5")
    report = _verify(pg_dsn, capsys, tmp_path)
    assert report["event_chain_intact"] is False
    assert any("event 5 " in p and "edited" in p for p in report["chain"]["problems"])


def test_rewritten_links_in_postgresql_are_seen(pg_dsn, capsys, tmp_path):
    """An edit with every later link rewritten (no key needed) and the head moved: the
    seal that follows, or the newest event no longer sealed, gives it away."""
    _written(pg_dsn)
    with psycopg.connect(pg_dsn) as c:
        rows = [ev.StoredEvent(r[0], r[1].int, r[2], r[3] and r[3].int, r[4] and r[4].int,
                               ev.us_from_datetime(r[5]), r[6], bytes(r[7]), bytes(r[8]))
                for r in c.execute("select seq, id, type, payment_id, transfer_id, "
                                   "occurred_at, payload, prev_mac, mac from events "
                                   "order by seq")]
    rows[2] = dataclasses.replace(rows[2], payload='{"k":2,"amount_minor":999999}')
    fixed = _relink(rows, 2, keep_seals=False)
    _tamper(pg_dsn, *[f"update events set payload = '{e.payload}', "
                      f"prev_mac = '\\x{e.prev_mac.hex()}', mac = '\\x{e.mac.hex()}' "
                      f"where seq = {e.seq}" for e in fixed[2:]],
            f"update event_chain_head set mac = '\\x{fixed[-1].mac.hex()}'")
    report = _verify(pg_dsn, capsys, tmp_path)
    assert report["event_chain_intact"] is False
    assert any("not sealed" in p for p in report["chain"]["problems"]), report["chain"]


def test_newest_events_removed_to_a_link_in_postgresql_are_seen(pg_dsn, capsys, tmp_path):
    _written(pg_dsn)
    with psycopg.connect(pg_dsn) as c:
        mac7 = bytes(c.execute("select mac from events where seq = 7").fetchone()[0])
    _tamper(pg_dsn, "delete from outbox where event_seq > 7",
            "delete from events where seq > 7",
            f"update event_chain_head set seq = 7, mac = '\\x{mac7.hex()}'")
    report = _verify(pg_dsn, capsys, tmp_path)
    assert report["event_chain_intact"] is False
    assert any("seq 7, is not sealed" in p for p in report["chain"]["problems"])


def _input_by_hand(tag: bytes, seq: int, e: Event, us: int, payload: str,
                   prev: bytes) -> bytes:
    """The v1/v2 input as ledger/README.md spells it, written out field by field here
    (not through ``ev.mac_input``): each field a 4-byte big-endian length and its bytes."""
    def field(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b
    return b"".join((field(tag), field(seq.to_bytes(8, "big")), field(e.id.to_bytes(16, "big")),
                     field(e.type.encode()), field((e.payment_id or 0).to_bytes(16, "big")),
                     field((e.transfer_id or 0).to_bytes(16, "big")),
                     field(us.to_bytes(8, "big", signed=True)), field(payload.encode()),
                     field(prev)))


_ID = st.integers(1, 2**128 - 1)
_EVENT = st.builds(
    Event, _ID, st.sampled_from(("received", "routed", "approved", "held", "x_1")),
    st.one_of(st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=12),
                                                              st.integers(-10**6, 10**6)),
                              max_size=3),
              st.text(max_size=12).map(lambda t: json.dumps({"t": t}, sort_keys=True,
                                                            separators=(",", ":")))),
    st.one_of(st.none(), _ID), st.one_of(st.none(), _ID),
    st.one_of(st.none(), st.integers(-2**62, 2**62)))


@settings(max_examples=200)
@given(events=st.lists(_EVENT, min_size=1, max_size=6), first=st.integers(1, 2**62),
       prev=st.binary(min_size=32, max_size=32), batch_us=st.integers(-2**62, 2**62))
def test_sealed_columns_are_the_inputs_spelled_out(events, first, prev, batch_us):
    """``seal``'s links and seal, for any ids (absent ones), times (the batch's or the
    event's own, negative ones), dict or text payloads: SHA-256 and HMAC (standard
    library) of the inputs written out by hand."""
    c = ev.seal(events, first, prev, _hmac, batch_us)
    for k, e in enumerate(events):
        us = batch_us if e.occurred_at_ns is None else e.occurred_at_ns // 1000
        payload = e.payload if isinstance(e.payload, str) else json.dumps(
            e.payload, sort_keys=True, separators=(",", ":"))
        assert (c.ids[k], c.types[k], c.payment_ids[k], c.transfer_ids[k],
                c.occurred_at_us[k], c.payloads[k]) == (
            e.id, e.type, e.payment_id, e.transfer_id, us, payload)
        last = k == len(events) - 1
        data = _input_by_hand(ev.SEAL_TAG if last else ev.LINK_TAG, first + k, e, us,
                              payload, prev)
        assert c.macs[k] == (_hmac(data) if last else hashlib.sha256(data).digest())
        prev = c.macs[k]
