"""The rows a batch's events leave in PostgreSQL, whatever the batches' shapes: the
writer sends each event's own columns once and the statement derives the rest (seq,
prev_mac, the outbox row and its topic, the chain head), so these are checked on the
tables, against the events submitted, with the standard library's HMAC and SHA-256."""

from __future__ import annotations

import hashlib
import hmac

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payswitch.lab import realparts
from payswitch.ledger import events as ev
from payswitch.ledger.store import Ledger, Request
from payswitch.ledger.types import Event

KEY = bytes(range(32))
TYPES = ("received", "routed", "approved", "held", "null")  # "null": not an SQL NULL


def _hmac(data: bytes) -> bytes:
    return hmac.new(KEY, data, hashlib.sha256).digest()


def _event(i: int, t: str) -> Event:
    return Event(i, t, {"k": i, "q": "it's \\ \"quoted\""}, payment_id=i % 3 or None,
                 transfer_id=None if i % 2 else 10**30 + i)


# batches of requests of event ids (small ids: a later batch repeats some, stored already)
BATCHES = st.lists(st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=5), min_size=1,
                            max_size=4), min_size=1, max_size=4)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=BATCHES, kinds=st.lists(st.sampled_from(TYPES), min_size=40, max_size=40))
def test_event_rows_outbox_and_head_follow_the_submitted_events(pg_admin_dsn, batches,
                                                               kinds):
    with (realparts.scratch_database(pg_admin_dsn) as dsn,
          Ledger(dsn, migrate=True, mac=_hmac) as led):
        stored: dict[int, int] = {}  # event id -> seq, as the store must number them
        for batch in batches:
            reqs = [Request((), tuple(_event(i, kinds[i - 1]) for i in r)) for r in batch]
            out = led.submit(reqs)
            for req, o in zip(reqs, out, strict=True):
                fresh = []
                for e in req.on_success:
                    if e.id not in stored:
                        stored[e.id] = len(stored) + 1
                        fresh.append(stored[e.id])
                assert list(o.events_written) == fresh
        rows = led.conn.execute(
            "select e.seq, e.id, e.type, e.payment_id, e.transfer_id, e.occurred_at, "
            "e.payload, e.prev_mac, e.mac, o.topic from events e "
            "left join outbox o on o.event_seq = e.seq order by e.seq").fetchall()
        head = led.conn.execute("select seq, mac from event_chain_head").fetchone()
    assert [(r[0], r[1].int) for r in rows] == sorted((s, i) for i, s in stored.items())
    prev = bytes(32)
    for seq, eid, t, pid, tid, at, payload, pm, m, topic in rows:
        e = _event(eid.int, kinds[eid.int - 1])
        assert (t, pid and pid.int, tid and tid.int) == (e.type, e.payment_id, e.transfer_id)
        assert payload == ev.canonical_payload(e.payload) and bytes(pm) == prev
        assert topic == "payswitch/events/" + t
        fields = (seq, eid.int, t, e.payment_id, e.transfer_id, ev.us_from_datetime(at),
                  payload, prev)
        link = hashlib.sha256(ev.mac_input(*fields, ev.LINK_TAG)).digest()
        assert bytes(m) in (link, _hmac(ev.mac_input(*fields)))
        prev = bytes(m)
    assert head == (len(rows), prev)
    if rows:  # the newest event is a seal, never a link
        *_, last = rows
        fields = (last[0], last[1].int, last[2], last[3] and last[3].int,
                  last[4] and last[4].int, ev.us_from_datetime(last[5]), last[6],
                  bytes(last[7]))
        assert bytes(last[8]) == _hmac(ev.mac_input(*fields))


def test_a_failed_write_commits_nothing_and_the_connection_goes_on(pg_dsn):
    """The write goes straight through libpq: an error in it is a LedgerError, the
    transaction is rolled back and the next batch works on the same connection."""
    with Ledger(pg_dsn, migrate=True, mac=_hmac) as led:
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            c.execute("create or replace function payswitch_t_refuse() returns trigger "
                      "language plpgsql as $$ begin raise exception 'refused here'; end $$")
            c.execute("create trigger refuse before insert on outbox for each row "
                      "execute function payswitch_t_refuse()")
        try:
            led.submit([Request((), (_event(1, "held"),))])
        except Exception as e:  # noqa: BLE001 - the type is the point
            assert type(e).__name__ == "LedgerError" and "refused here" in str(e)
        else:
            raise AssertionError("the batch must fail")
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            assert c.execute("select count(*) from events").fetchone() == (0,)
            c.execute("drop trigger refuse on outbox")
        assert led.submit([Request((), (_event(1, "held"),))])[0].events_written == (1,)
