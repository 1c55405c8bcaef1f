"""The hot path's statement records an answer by the dedup row's primary key, whatever
the planner knows: a scan of ``switch_dedup_open`` (the open requests, for recovery)
would visit the index entries every completed request leaves behind until a vacuum, a
cost per batch that grows with the table."""

from __future__ import annotations

import orjson
import psycopg
import pytest
import trio
from psycopg import sql

from payswitch.switch.journal import Store


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
def test_an_answer_is_recorded_without_scanning_the_open_requests(dsn: str,
                                                                   mode: str) -> None:
    store = Store(dsn, pool_size=1)
    try:
        trio.run(store.migrate)
    finally:
        store.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # requests claimed and answered (each leaves a dead entry in switch_dedup_open),
        # a few still open, the statistics up to date: what a running switch has
        conn.execute("insert into switch_dedup (dup_key, owner) select 'd' || i, 'o'"
                     " from generate_series(1, 5000) i")
        conn.execute("update switch_dedup set response = '{}', completed_at = now()")
        conn.execute("insert into switch_dedup (dup_key, owner) select 'o' || i, 'o'"
                     " from generate_series(1, 20) i")
        conn.execute("analyze switch_dedup")
        query = Store._BULK
        for n in range(1, 4):  # as _TrioBulk prepares it
            query = query.replace("%s", f"${n}", 1)
        conn.execute("prepare bulk(jsonb, text, text) as " + query)
        conn.execute(sql.SQL("set plan_cache_mode = {}").format(sql.Literal(mode)))
        rows = [orjson.dumps({"w": "c", "e": "request", "s": "t", "k": "n1", "f": {},
                              "p": "fp"}),
                orjson.dumps({"w": "d", "e": "response", "s": "t", "k": "o1",
                              "f": {"response_code": "00"}, "a": 1})]
        arr = sql.Literal((b"[" + b",".join(rows) + b"]").decode())
        plan = "\n".join(r[0] for r in conn.execute(sql.SQL(
            "explain execute bulk({}::jsonb, 'o', 'o')").format(arr)))
        assert "switch_dedup_open" not in plan, plan
        assert conn.execute(sql.SQL("execute bulk({}::jsonb, 'o', 'o')").format(
            arr)).fetchall() == []  # both won
        assert conn.execute("select response from switch_dedup where dup_key = 'o1'"
                            ).fetchone() == ({"response_code": "00"},)
