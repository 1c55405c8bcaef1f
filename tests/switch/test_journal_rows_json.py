"""The hot path's journal rows reach PostgreSQL as JSON made by their callers (orjson;
json.dumps where orjson refuses a value): what the table holds is what was journalled,
and a row the server cannot store fails its own call only."""

from __future__ import annotations

import psycopg
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from switchkit import trio_test

from payswitch.codecs.iso8583 import Message
from payswitch.switch.errors import StoreError
from payswitch.switch.journal import SAFE_FIELDS, Store, safe_fields

# PostgreSQL's text cannot hold NUL, its jsonb no lone surrogate: any other text.
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
_INTS = ("amount_minor", "settlement_amount_minor", "billing_amount_minor")
_FIELDS = st.fixed_dictionaries({}, optional={
    **{name: _TEXT for name in SAFE_FIELDS if name not in _INTS and name != "mti"},
    **{name: st.integers(-(2**63), 2**63 - 1) for name in _INTS},
    "pan": st.from_regex(r"[0-9]{12,19}", fullmatch=True),
})
_COLUMNS = ("mti", "stan", "rrn", "transmission_time", "amount_minor", "currency",
            "processing_code", "pan_masked", "terminal_id", "response_code")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=_FIELDS, mti=st.sampled_from(["0100", "0200", "0400"]))
def test_a_claimed_request_is_stored_as_journalled(dsn: str, fields: dict, mti: str,
                                                   ) -> None:
    msg = Message(mti=mti, **fields)
    store = Store(dsn, pool_size=1)
    try:
        trio.run(store.migrate)
        with psycopg.connect(dsn) as conn:  # each example on empty tables
            conn.execute("delete from switch_journal; delete from switch_dedup")
        claim = trio.run(store.claim, "key", "acq", msg, "fp")
    finally:
        store.close()
    with psycopg.connect(dsn) as conn:
        (row,) = conn.execute("select fields, " + ", ".join(_COLUMNS) +  # noqa: S608
                              " from switch_journal where dup_key = 'key'").fetchall()
    want = safe_fields(msg)
    assert claim.owner
    assert row[0] == want
    assert row[1:] == tuple(want.get(c) for c in _COLUMNS)


@trio_test
async def test_a_row_json_cannot_carry_fails_alone(dsn: str) -> None:
    """orjson refuses a lone surrogate and a key that is not a string: such a row goes
    as json.dumps makes it, the server stores the one ({1: ...} as {"1": ...}) and
    refuses the other, for that call only; its batch neighbours are written."""
    store = Store(dsn, pool_size=1)
    await store.migrate()
    results: dict[str, object] = {}

    async def append(name: str, fields: dict) -> None:
        try:
            results[name] = await store.append("risk_scored", fields, dup_key=name)
        except Exception as e:  # noqa: BLE001 (a StoreError is expected, any other fails)
            results[name] = e

    async with trio.open_nursery() as n:  # one batch: queued behind a held writer
        release, started = trio.Event(), trio.Event()

        async def hold() -> None:
            token = trio.lowlevel.current_trio_token()
            await store.call(lambda conn: token.run_sync_soon(started.set)
                             or trio.from_thread.run(release.wait, trio_token=token))
        n.start_soon(hold)
        await started.wait()
        n.start_soon(append, "surrogate", {"note": "\ud800"})
        n.start_soon(append, "int_key", {1: "one"})
        for i in range(5):
            n.start_soon(append, f"plain{i}", {"note": "café"})
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    store.close()
    assert isinstance(results.pop("surrogate"), StoreError)
    assert all(r is True for r in results.values()), results
    with psycopg.connect(dsn) as conn:
        stored = dict(conn.execute("select dup_key, fields from switch_journal").fetchall())
    assert stored == {"int_key": {"1": "one"}, **{f"plain{i}": {"note": "café"}
                                                  for i in range(5)}}
