"""Schema migration: ``migrate(conn)`` applies schema.sql (idempotent)."""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql

SCHEMA_VERSION = 1


def schema_sql() -> str:
    return resources.files("payswitch.ledger").joinpath("schema.sql").read_text("utf-8")


def migrate(conn: psycopg.Connection, app_role: str | None = None) -> None:
    """Creates or upgrades the ledger tables in the first schema of ``search_path``.

    ``app_role``: a role the switch connects as; it gets SELECT/INSERT on history and
    nothing that could rewrite it (the event trigger is the second guard, for owners).
    """
    with conn.transaction():
        # one migrator at a time (several switch workers may start together)
        conn.execute("select pg_advisory_xact_lock(hashtext('payswitch.ledger.migrate'))")
        conn.execute(schema_sql())
        if app_role:
            role = sql.Identifier(app_role)
            conn.execute(sql.SQL(
                "grant select, insert on accounts, transfers, pending_transfers, "
                "failed_transfers, events, outbox, event_chain_head to {}").format(role))
            conn.execute(sql.SQL(
                "grant update on accounts, pending_transfers, outbox, event_chain_head "
                "to {}").format(role))
            conn.execute(sql.SQL(
                "revoke update, delete, truncate on events, transfers from {}").format(role))
