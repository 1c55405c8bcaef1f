"""Issue 5's crash test: `payswitch serve` (ledger + relay on) under load from terminals,
SIGKILLed at random moments several times and restarted. Afterwards `ledger verify` is
clean, every approval a terminal received has its pending hold, no transfer is applied
twice, and every event reached MQTT."""

from __future__ import annotations

import contextlib
import random
import secrets
import time
import uuid

import psycopg
import pytest
from mqttkit import Subscriber

import payswitch.ledger as L
from payswitch.lab.demo import demo_config, start_simulator, start_switch
from payswitch.simulators.cards import BY_NAME
from payswitch.switch.ledgerwire import det_id

from .crashkit import Load

KILLS = 5
TERMINALS = 6
CARDS = [BY_NAME[n] for n in ("visa_approve", "mastercard_approve", "mastercard_approve_2",
                              "mastercard_approve_2", "visa_insufficient_funds")]



def _unsent(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select count(*) from outbox where sent_at is null").fetchone()[0]


@pytest.mark.slow
def test_switch_sigkill_under_load_keeps_ledger_whole(pg_dsn, mqtt_broker, tmp_path):
    mac_key = secrets.token_hex(32)
    env = {"PAYSWITCH_EVENT_MAC_KEY": mac_key, "PAYSWITCH_PAN_TOKEN_KEY": secrets.token_hex(32)}
    prefix = f"crash-{uuid.uuid4().hex[:8]}/"
    rng = random.Random(5)
    with contextlib.ExitStack() as stack, Subscriber(*mqtt_broker, prefix) as sub:
        ports = {net: start_simulator(stack, net, str(tmp_path), "--latency-ms", "2")[1]
                 for net in ("visa", "mastercard")}
        config = tmp_path / "switch.toml"

        def write_config(pos_port: int) -> None:
            config.write_text(demo_config(ports["visa"], ports["mastercard"], ledger=True,
                                          pos_port=pos_port, terminals=TERMINALS,
                                          ledger_relay=(*mqtt_broker, prefix)))

        write_config(0)  # the first switch binds any free port; the ready line says which
        for round_ in range(KILLS + 1):
            with contextlib.ExitStack() as one:
                proc, listeners = start_switch(one, str(config), str(tmp_path), pg_dsn, env)
                if round_ == 0:
                    write_config(listeners["pos"][1])  # restarts take it back: terminals
                    # terminals reconnect to the same address
                    load = Load(listeners["pos"][1], TERMINALS, CARDS)
                    load.thread.start()
                if round_ < KILLS:
                    time.sleep(1.5 + rng.random() * 2.0)
                    assert proc.popen.poll() is None, proc.tail()
                    proc.popen.kill()  # SIGKILL, mid-load
                    proc.popen.wait()
                    continue
                # last run: stop the load, let voids, reversals and the relay finish
                time.sleep(2.0)
                load.stop.set()
                load.thread.join(15)
                deadline = time.monotonic() + 30
                while _unsent(pg_dsn) and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.0)  # the recovered requests' voids (background) are done
                assert proc.stop() == 0, proc.tail()
        deadline = time.monotonic() + 15
        with psycopg.connect(pg_dsn) as conn:
            all_ids = {str(r[0]) for r in conn.execute("select id from events")}
        while not all_ids <= sub.ids and time.monotonic() < deadline:
            time.sleep(0.1)

    approved = load.with_code("00")
    assert load.sent > 300 and len(approved) > 100, (load.sent, len(approved))
    mac = L.hmac_sha256(bytes.fromhex(mac_key))
    with psycopg.connect(pg_dsn) as conn:
        report = L.verify(conn, mac)
        assert report.ok and report.ledger_balanced, report.to_text()
        # every approval a terminal received has its hold, still pending (never voided)
        holds = [uuid.UUID(int=det_id("hold", k)) for k in approved]
        states = dict(conn.execute("select id, state from pending_transfers"
                                   " where id = any(%s)", (holds,)).fetchall())
        missing = [h for h in holds if states.get(h) != "pending"]
        assert not missing, f"{len(missing)} approvals without a pending hold"
        # nothing applied twice: one hold and one approval per payment
        twice = conn.execute("select payment_id from events where type in ('approved',"
                             " 'held') group by payment_id, type having count(*) > 1"
                             ).fetchall()
        assert not twice
        (n_holds,) = conn.execute("select count(*) from transfers where flags & 2 = 2"
                                  ).fetchone()
        (n_held,) = conn.execute("select count(*) from events where type = 'held'").fetchone()
        assert n_holds == n_held
        assert conn.execute("select count(*) from outbox where sent_at is null"
                            ).fetchone()[0] == 0
        # a request recovered after a kill was answered 91: a hold it left is voided
        keys = [r[0] for r in conn.execute("select dup_key from switch_journal"
                                           " where event = 'recovered'")]
        recovered = len(keys)
        left = conn.execute("select count(*) from pending_transfers where id = any(%s)"
                            " and state = 'pending'",
                            ([uuid.UUID(int=det_id("hold", k)) for k in keys],)).fetchone()[0]
        assert left == 0, f"{left} holds of requests answered 91 after a crash not voided"
        voided = dict(conn.execute("select state, count(*) from pending_transfers"
                                   " group by state").fetchall())
    print(f"crash test: sent {load.sent}, approvals seen {len(approved)}, recovered "
          f"after kills {recovered}, holds {voided}, events {len(all_ids)}")
    lost = all_ids - sub.ids
    assert not lost, f"{len(lost)} events never reached MQTT"
