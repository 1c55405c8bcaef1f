"""The harness finds or starts the real parts; both paths must work on a fresh machine."""

import psycopg

from payswitch.lab import realparts


def test_private_postgres_starts_serves_and_is_removed():
    with realparts.private_postgres() as dsn:
        with psycopg.connect(dsn) as conn:
            assert conn.execute("show synchronous_commit").fetchone()[0] == "on"
        port = int(psycopg.conninfo.conninfo_to_dict(dsn)["port"])
    assert not realparts.port_open("127.0.0.1", port)


def test_scratch_database_is_dropped(pg_admin_dsn):
    with realparts.scratch_database(pg_admin_dsn) as dsn:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(dsn) as conn:
            conn.execute("create table t (x int)")
    with psycopg.connect(pg_admin_dsn) as conn:
        row = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
    assert row is None


def test_private_mosquitto_accepts_connections():
    with realparts.private_mosquitto() as (host, port):
        assert realparts.port_open(host, port)
    assert not realparts.port_open(host, port)
