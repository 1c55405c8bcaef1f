"""The ledger's connections (the writer's, the expiry job's, the switch's) carry the
journal's client-side TCP bounds: statement_timeout is enforced by the server only, so
without them a partitioned database holds the ledger writer's thread in recv() for the
kernel's ~15 min, and every approval behind it."""

from __future__ import annotations

from payswitch.ledger.store import TCP_MARGIN_MS, Ledger


def test_ledger_connection_has_keepalives_and_tcp_user_timeout(pg_dsn: str) -> None:
    led = Ledger(pg_dsn, statement_timeout_ms=3000)
    try:
        opts = {o.keyword.decode(): (o.val or b"").decode() for o in led.conn.pgconn.info}
        bound_ms = 3000 + TCP_MARGIN_MS
        assert opts["keepalives"] == "1"
        assert opts["tcp_user_timeout"] == str(bound_ms)
        idle, interval, count = (int(opts[k]) for k in
                                 ("keepalives_idle", "keepalives_interval", "keepalives_count"))
        assert idle >= 1 and interval >= 1 and count >= 1
        # a dead peer is detected within about the bound, not the kernel's 2 h + 15 min
        assert idle + interval * count <= bound_ms / 1000 + 1
        assert led.conn.execute("show statement_timeout").fetchone()[0] == "3s"
    finally:
        led.close()
