"""Issue 9's chaos test: `payswitch serve` (ledger and relay on) under demo-style load
from terminals (purchases, some never answered by the issuer, reversals of approvals)
while its PostgreSQL, a private cluster, is SIGKILLed for 10 s and brought back.

The switch process stays up; terminals keep their connections and are answered 96
while the database is away (never refused); afterwards approvals resume without a
restart, `ledger verify` is clean (its check 6 included: every hold the switch owes a
void is voided), every reversed original's hold is voided, every 91 that reached an
issuer has its 0420 acknowledged, and every stderr line is JSON.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import threading
import time
import uuid

import psycopg
import pytest
import trio
from mqttkit import Subscriber
from pgcluster import pg_cluster

import payswitch.ledger as L
from payswitch.lab import realparts
from payswitch.lab.demo import demo_config, start_simulator, start_switch
from payswitch.simulators.cards import BY_NAME
from payswitch.simulators.terminal import Terminal, TransportError, open_link

TERMINALS = 6
OUTAGE_S = 10.0
CARDS = [BY_NAME[n] for n in ("visa_approve", "mastercard_approve", "visa_approve_2",
                              "mastercard_approve", "visa_no_answer",
                              "visa_insufficient_funds")]


class Load:
    """Closed-loop terminals in a thread; every answer kept with the time it was sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[tuple[float, str, str]] = []  # (sent at, MTI, DE39 or error)
        self.transport_errors: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        async with trio.open_nursery() as n:
            for i in range(TERMINALS):
                n.start_soon(self._terminal, i)

    async def _one(self, link, msg) -> str | None:
        sent = time.monotonic()
        r = await link.request(msg, 10.0)
        if r.response is None:
            self.transport_errors.append((sent, r.error or "no answer"))
            return None
        self.results.append((sent, msg.mti, r.response.response_code))
        return r.response.response_code

    async def _terminal(self, i: int) -> None:
        rng = random.Random(i)
        term = Terminal(f"DEMO{i + 1:04d}", seed=i)
        while not self.stop.is_set():
            try:
                async with open_link("127.0.0.1", self.port) as link:
                    while not self.stop.is_set() and not link.closed:
                        msg = term.purchase(rng.choice(CARDS), rng.randrange(100, 5000))
                        code = await self._one(link, msg)
                        if code == "00" and rng.random() < 0.25:
                            await self._one(link, msg.replace(
                                mti="0400", stan=term.next_stan(), original_data="0200"
                                + msg.stan + msg.transmission_time + "0" * 22))
            except TransportError as e:
                self.transport_errors.append((time.monotonic(), str(e)))
            await trio.sleep(0.1)


def _one_value(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()[0]


def _settle(dsn: str, timeout_s: float = 90) -> None:
    """Until no SAF row is pending, every event is sent and no owed void is left."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = _one_value(dsn, """select
            (select count(*) from switch_saf where state = 'pending')
          + (select count(*) from outbox where sent_at is null)
          + (select count(*) from ledger_expected_voids v join pending_transfers p
               on p.id = v.transfer_id where p.state = 'pending')""")
        if left == 0:
            return
        time.sleep(0.5)


@pytest.mark.slow
def test_postgres_killed_for_10s_under_load(mqtt_broker, tmp_path):
    mac_key = secrets.token_hex(32)
    env = {"PAYSWITCH_EVENT_MAC_KEY": mac_key, "PAYSWITCH_PAN_TOKEN_KEY": secrets.token_hex(32)}
    prefix = f"chaos-{uuid.uuid4().hex[:8]}/"
    pos_port = realparts.free_port()
    with pg_cluster() as pg, realparts.scratch_database(pg.dsn) as dsn, \
            contextlib.ExitStack() as stack, Subscriber(*mqtt_broker, prefix):
        ports = {net: start_simulator(stack, net, str(tmp_path), "--latency-ms", "2")[1]
                 for net in ("visa", "mastercard")}
        config = tmp_path / "switch.toml"
        config.write_text(demo_config(ports["visa"], ports["mastercard"], ledger=True,
                                      pos_port=pos_port, terminals=TERMINALS,
                                      ledger_relay=(*mqtt_broker, prefix)))
        proc, _ = start_switch(stack, str(config), str(tmp_path), dsn, env)
        load = Load(pos_port)
        load.thread.start()
        time.sleep(5.0)
        killed = time.monotonic()
        pg.kill()
        while time.monotonic() < killed + OUTAGE_S:
            assert proc.popen.poll() is None, proc.tail()
            time.sleep(0.5)
        restarting = time.monotonic()
        pg.start()
        back = time.monotonic()
        time.sleep(10.0)
        load.stop.set()
        load.thread.join(20)
        _settle(dsn)
        alive = proc.popen.poll() is None
        stderr = proc.stderr_text()
        rc = proc.stop()

        during = [c for t, _, c in load.results if killed + 1 <= t < restarting]
        after = [c for t, _, c in load.results if t >= back + 3]
        before = [c for t, _, c in load.results if t < killed]
        mac = L.hmac_sha256(bytes.fromhex(mac_key))
        with psycopg.connect(dsn) as conn:
            report = L.verify(conn, mac)
            reversed_left = conn.execute(
                "select count(*) from ledger_expected_voids v join pending_transfers p"
                " on p.id = v.transfer_id where v.reason = 'reversal'"
                " and p.state <> 'voided'").fetchone()[0]
            reversals = conn.execute("select count(*) from switch_reversal").fetchone()[0]
            # a 91 whose request reached an issuer, without an acknowledged 0420
            unacked_91 = conn.execute("""
                select count(*) from switch_dedup d
                 where d.response->>'response_code' = '91'
                   and exists (select 1 from switch_journal j where j.dup_key = d.dup_key
                                  and j.event = 'issuer_request')
                   and not exists (select 1 from switch_saf s where s.dup_key = d.dup_key
                                      and s.mti = '0420' and s.state = 'acked')
                """).fetchone()[0]
            n91 = conn.execute("select count(*) from switch_dedup"
                               " where response->>'response_code' = '91'").fetchone()[0]

    print(f"chaos: before {len(before)} ({before.count('00')} approved), outage "
          f"{len(during)} answers {sorted(set(during))}, after {len(after)} "
          f"({after.count('00')} approved), reversals {reversals}, 91s {n91}, "
          f"transport errors {len(load.transport_errors)}")
    assert alive and rc == 0, stderr[-3000:]
    assert before.count("00") > 20
    assert during and set(during) <= {"96", "91"} and during.count("96") > 10, during
    assert not load.transport_errors, load.transport_errors[:5]
    assert after.count("00") > 20, after
    assert report.ok and report.expected_voids_checked, report.to_text()
    assert reversals > 5 and reversed_left == 0
    assert n91 > 0 and unacked_91 == 0
    bad = [line for line in stderr.splitlines() if line.strip() and not _is_json(line)]
    assert not bad, bad[:5]


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
