"""Issue 9, finding 1: the switch survives its database going away.

The outage is real: the test's scratch database stops accepting connections
(``allow_connections false``) and every session on it is terminated
(``pg_terminate_backend``: the switch's journal, ledger writer, ledger control and relay
connections get ``AdminShutdown``, then every reconnect is refused), then it comes back.
What a user sees is asserted: DE39 bytes on the terminal's socket, the switch still
accepting, rows in the tables afterwards, JSON lines on the log stream.
"""

from __future__ import annotations

import io
import json
import uuid

import psycopg
import pytest
import trio
from switchkit import (
    FakeIssuer,
    Terminal,
    approve,
    config_dict,
    purchase,
    running_switch,
    serving,
    trio_test,
)

from payswitch.simulators.cards import with_luhn
from payswitch.switch import logs
from payswitch.switch.ledgerwire import det_id
from payswitch.switch.messages import duplicate_key

MAC_KEY = "00112233445566778899aabbccddeeff"
TOKEN_KEY = "ffeeddccbbaa99887766554433221100"
ONUS = with_luhn("999001000000001")


@pytest.fixture(autouse=True)
def ledger_keys(monkeypatch):
    monkeypatch.setenv("PAYSWITCH_EVENT_MAC_KEY", MAC_KEY)
    monkeypatch.setenv("PAYSWITCH_PAN_TOKEN_KEY", TOKEN_KEY)


def ledger_cfg(dsn: str, port: int, mqtt: tuple[str, int] | None = None) -> dict:
    cfg = config_dict(dsn, port)
    cfg["ledger"] = {"enabled": True, "currencies": ["USD", "EUR"], "max_wait_ms": 1,
                     "write_timeout_ms": 2000}
    if mqtt is not None:
        cfg["ledger"] |= {"relay": True, "mqtt_host": mqtt[0], "mqtt_port": mqtt[1],
                          "topic_prefix": f"t{uuid.uuid4().hex[:8]}/"}
    cfg["onus"] = [{"prefix": "999001", "currency": "USD", "opening_balance_minor": 100_000}]
    cfg["database"] |= {"statement_timeout_ms": 2000, "connect_timeout_s": 2}
    return cfg


def set_outage(dsn: str, down: bool) -> None:
    """The scratch database refuses connections and its sessions are killed (down), or
    accepts them again."""
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'alter database "{name}" allow_connections {str(not down).lower()}')
        if down:
            conn.execute("select pg_terminate_backend(pid) from pg_stat_activity"
                         " where datname = %s and pid <> pg_backend_pid()", (name,))


def hold_state(dsn: str, msg) -> str | None:
    hold = uuid.UUID(int=det_id("hold", duplicate_key("T:TERM0001", msg)))
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select state from pending_transfers where id = %s",
                           (hold,)).fetchone()
    return row[0] if row else None


def recorded_code(dsn: str, msg) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select response->>'response_code' from switch_dedup"
                           " where dup_key = %s", (duplicate_key("T:TERM0001", msg),)
                           ).fetchone()
    return row[0] if row else None


async def until(pred, timeout_s: float = 20, poll_s: float = 0.1) -> None:
    with trio.fail_after(timeout_s):
        while not await pred():
            await trio.sleep(poll_s)


@trio_test
async def test_database_outage_answers_96_and_recovers(dsn, mqtt_broker):
    stream = io.StringIO()
    logs.setup("INFO", stream=stream)
    delay = {"s": 0.0}

    def answer(msg):
        resp = approve(msg)
        return (delay["s"], resp) if delay["s"] else resp

    issuer = FakeIssuer(answer)
    try:
        async with serving(issuer), running_switch(ledger_cfg(dsn, issuer.port,
                                                              mqtt_broker)) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            onus = purchase("000001", 500, pan=ONUS).replace(currency="840")
            assert (await term.request(onus)).response_code == "00"
            assert (await term.request(purchase("000002", 600))).response_code == "00"

            # Three approvals reach the issuer, then the database dies before their holds
            # are written: 96 to the terminal, and (once it is back) 0420s and voids.
            delay["s"] = 1.0
            caught = [purchase(f"00001{i}", 700 + i) for i in range(3)]
            for msg in caught:
                await term.send(msg)
            await issuer.wait_for(lambda: len(issuer.traffic("02")) >= 4)
            set_outage(dsn, True)
            codes = sorted([(await term.recv()).response_code for _ in caught])
            assert codes == ["96"] * 3

            # While it is away: new connections are accepted, every request gets 96.
            delay["s"] = 0.0
            other = await Terminal.connect(sw.ports["pos"])
            during = [purchase("000020", 800), purchase("000021", 900, pan=ONUS)
                      .replace(currency="840"),
                      purchase("000002", 600).replace(mti="0400", stan="000022")]
            for msg in during:
                assert (await other.request(msg)).response_code == "96"
            await trio.sleep(1.5)  # the writer, void task and relay retry meanwhile
            assert (await other.request(purchase("000023", 950))).response_code == "96"
            set_outage(dsn, False)

            # Back without a restart: approvals again, the caught ones recorded as the 96
            # they were told, reversed at the issuer and their holds never left pending.
            stans = iter(range(100, 999))

            async def approved_again() -> bool:
                msg = purchase(f"000{next(stans)}", 1000)
                return (await other.request(msg)).response_code == "00"
            await until(approved_again)
            assert (await other.request(purchase("000030", 500, pan=ONUS)
                                        .replace(currency="840"))).response_code == "00"

            async def caught_settled() -> bool:
                return all(recorded_code(dsn, m) == "96" for m in caught) and all(
                    hold_state(dsn, m) in (None, "voided") for m in caught)
            await until(caught_settled)
            amounts = {m.amount_minor for m in caught}
            await issuer.wait_for(lambda: {m.amount_minor for m in
                                           issuer.traffic("042")} >= amounts, 20)
            await term.aclose()
            await other.aclose()
    finally:
        set_outage(dsn, False)
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is JSON
    events = {p["event"] for p in parsed}
    assert any(e.startswith("ledger_writer") for e in events), sorted(events)
    assert any(e.startswith("outbox_relay") for e in events), sorted(events)
