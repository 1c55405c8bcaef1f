"""Journal connections carry client-side TCP bounds: statement_timeout is enforced by
the server only, so without them a partitioned database holds a pool thread in the
kernel for ~15 min and the SIGTERM drain cannot finish."""

from __future__ import annotations

from payswitch.ledger.store import TCP_MARGIN_MS
from payswitch.switch.journal import Store


def _options(conn) -> dict[str, str]:
    return {o.keyword.decode(): (o.val or b"").decode() for o in conn.pgconn.info}


def test_connection_has_keepalives_and_tcp_user_timeout(dsn: str) -> None:
    store = Store(dsn, pool_size=1, statement_timeout_ms=3000)
    conn = store._connect()
    try:
        opts = _options(conn)
        bound_ms = 3000 + TCP_MARGIN_MS
        assert opts["keepalives"] == "1"
        assert opts["tcp_user_timeout"] == str(bound_ms)
        idle, interval, count = (int(opts[k]) for k in
                                 ("keepalives_idle", "keepalives_interval", "keepalives_count"))
        assert idle >= 1 and interval >= 1 and count >= 1
        # a dead peer is detected within about the bound, not the kernel's 2 h + 15 min
        assert idle + interval * count <= bound_ms / 1000 + 1
        assert conn.execute("show statement_timeout").fetchone()[0] == "3s"
    finally:
        conn.close()
        store.close()
