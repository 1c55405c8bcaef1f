"""Worker processes on one database (issue 8): every journal, duplicate and SAF row
names the process that wrote it, and start-up recovery takes over only the open
requests of processes that are gone. Real PostgreSQL; a "process" is a Store with its
owner lock (a session advisory lock on a connection of its own)."""

from __future__ import annotations

import psycopg
from switchkit import trio_test

from payswitch.codecs.iso8583 import Message
from payswitch.switch.journal import Store
from payswitch.switch.messages import reversal_item


def _request(stan: str) -> Message:
    return Message(mti="0100", pan="4761739001010010", processing_code="000000",
                   amount_minor=100, stan=stan, terminal_id="TERM0001")


def _answers(dsn: str) -> dict[str, object]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("select dup_key, response->>'response_code'"
                                 " from switch_dedup").fetchall())


@trio_test
async def test_rows_carry_their_owner_and_migration_is_idempotent(dsn: str) -> None:
    store = Store(dsn, pool_size=1)
    await store.migrate()
    await store.migrate()  # every start runs it: a second run changes nothing
    await store.claim("k1", "acq", _request("000001"), "fp")
    store.close()
    with psycopg.connect(dsn) as conn:
        owners = {r[0] for r in conn.execute(
            "select owner from switch_journal union all select owner from switch_dedup")}
    assert owners == {store.owner}


@trio_test
async def test_recovery_skips_a_live_owner_and_takes_over_a_gone_one(dsn: str) -> None:
    old = Store(dsn, pool_size=1)  # a worker still draining (or another live worker)
    await old.migrate()
    await old.hold_owner_lock()
    await old.claim("live", "acq", _request("000001"), "fp")
    new = Store(dsn, pool_size=1)  # its successor starting
    await new.hold_owner_lock()
    assert await new.recover(reversal_item, 3600) == 0
    assert _answers(dsn) == {"live": None}  # still in flight: nobody answered 91

    old.release_owner()  # the process is gone (SIGKILL closes its session the same way)
    old.close()
    keys: list[str] = []
    assert await new.recover(reversal_item, 3600, keys) == 1
    assert keys == ["live"] and _answers(dsn) == {"live": "91"}
    with psycopg.connect(dsn) as conn:  # the 91 is the recovering process's row
        (who,) = conn.execute("select owner from switch_journal where event = 'recovered'"
                              ).fetchone()
    assert who == new.owner
    new.release_owner()
    new.close()


@trio_test
async def test_rows_without_an_owner_are_recovered(dsn: str) -> None:
    store = Store(dsn, pool_size=1)
    await store.migrate()
    await store.claim("legacy", "acq", _request("000002"), "fp")
    with psycopg.connect(dsn, autocommit=True) as conn:  # written before the column
        conn.execute("update switch_dedup set owner = null")
    await store.hold_owner_lock()
    assert await store.recover(reversal_item, 3600) == 1
    store.release_owner()
    store.close()


@trio_test
async def test_the_periodic_sweep_takes_over_only_requests_past_the_age(dsn: str) -> None:
    dead = Store(dsn, pool_size=1)  # never held its lock: as good as gone
    await dead.migrate()
    await dead.claim("old", "acq", _request("000003"), "fp")
    await dead.claim("young", "acq", _request("000004"), "fp")
    dead.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("update switch_dedup set created_at = now() - interval '2 minutes'"
                     " where dup_key = 'old'")
    live = Store(dsn, pool_size=1)
    await live.hold_owner_lock()
    keys: list[str] = []
    assert await live.recover(reversal_item, 3600, keys, min_age_s=60) == 1
    assert keys == ["old"] and _answers(dsn) == {"old": "91", "young": None}
    live.release_owner()
    live.close()
