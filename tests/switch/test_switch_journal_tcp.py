"""The switch's database connections carry client-side TCP bounds: statement_timeout is
enforced by the server only, so without them a partitioned database holds a journal pool
thread, or the ledger writer's thread and every approval behind it, in the kernel's recv()
for ~15 min, and the SIGTERM drain cannot finish."""

from __future__ import annotations

from typing import Any

from payswitch.ledger.store import TCP_MARGIN_MS, Ledger
from payswitch.switch.journal import Store


def assert_tcp_bounds(conn: Any, statement_timeout_ms: int) -> None:
    opts = {o.keyword.decode(): (o.val or b"").decode() for o in conn.pgconn.info}
    bound_ms = statement_timeout_ms + TCP_MARGIN_MS
    assert opts["keepalives"] == "1"
    assert opts["tcp_user_timeout"] == str(bound_ms)
    idle, interval, count = (int(opts[k]) for k in
                             ("keepalives_idle", "keepalives_interval", "keepalives_count"))
    assert idle >= 1 and interval >= 1 and count >= 1
    # a dead peer is detected within about the bound, not the kernel's 2 h + 15 min
    assert idle + interval * count <= bound_ms / 1000 + 1
    assert conn.execute("show statement_timeout").fetchone()[0] == "3s"


def test_journal_connection_has_keepalives_and_tcp_user_timeout(dsn: str) -> None:
    store = Store(dsn, pool_size=1, statement_timeout_ms=3000)
    conn = store._connect()
    try:
        assert_tcp_bounds(conn, 3000)
    finally:
        conn.close()
        store.close()


def test_ledger_connection_has_keepalives_and_tcp_user_timeout(dsn: str) -> None:
    led = Ledger(dsn, statement_timeout_ms=3000)
    try:
        assert_tcp_bounds(led.conn, 3000)
    finally:
        led.close()
