"""SIGKILL the ledger under load, several times; afterwards verify is clean, every
acknowledged approval has its hold, nothing applied twice, no outbox event lost."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

import payswitch.ledger as L
from payswitch.ledger.relay import unsent_count

CHILD = pathlib.Path(__file__).with_name("ledger_crash_child.py")
MAC = L.hmac_sha256(b"crash-test-key-0123456789abcdef")


@pytest.mark.slow
def test_sigkill_under_load(pg_dsn, mqtt_broker, tmp_path):
    with L.Ledger(pg_dsn, migrate=True) as led:
        accts = [L.new_account(i, 840, 1, debits_must_not_exceed_credits=True)
                 for i in range(1, 51)] + [L.new_account(100, 840, 2), L.new_account(200, 840, 3)]
        assert set(led.create_accounts(accts)) == {"created"}
        led.create_transfers([L.Transfer(900 + i, 200, i, 5_000, 840, 1) for i in range(1, 51)])
    journal = tmp_path / "journal"
    env = dict(os.environ, MQTT_HOST=mqtt_broker[0], MQTT_PORT=str(mqtt_broker[1]),
               MQTT_PREFIX=f"crash-{uuid.uuid4().hex[:8]}/")
    rng = random.Random(5)
    for round_ in range(6):
        p = subprocess.Popen([sys.executable, str(CHILD), pg_dsn, str(journal), str(round_)],
                             env=env, stderr=subprocess.PIPE)
        time.sleep(1.5 + rng.random() * 2.5)
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stderr.close()
    # one last run that only retries what was in flight, then stops
    p = subprocess.Popen([sys.executable, str(CHILD), pg_dsn, str(journal), "99"], env=env,
                         stderr=subprocess.DEVNULL)
    time.sleep(4)
    p.send_signal(signal.SIGKILL)
    p.wait()

    acked: dict[int, str] = {}
    for line in journal.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "A" and len(parts) == 3:
            n, result = int(parts[1]), parts[2]
            # a retry answers exists for what was created before the crash
            assert acked.get(n, result) in (result, "created", "exists"), (n, result)
            acked[n] = result
    assert len(acked) > 200
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        report = L.verify(conn, MAC)
        assert report.ok, report.to_text()
        holds = {r[0].int for r in conn.execute(
            "select id from transfers where flags & 2 <> 0").fetchall()}
        approved = {r[0].int for r in conn.execute(
            "select transfer_id from events where type = 'approved'").fetchall()}
        for n, result in acked.items():
            if result in ("created", "exists"):
                assert 10**6 + n in holds and 10**6 + n in approved, n
            else:
                assert 10**6 + n not in holds, n
        # no event written twice for one payment
        dup = conn.execute("select payment_id, type, count(*) from events group by 1, 2 "
                           "having count(*) > 1").fetchall()
        assert dup == []
        # the relay of the next start drains the outbox: nothing is lost
    relay = L.OutboxRelay(pg_dsn, L.RelayConfig(host=mqtt_broker[0], port=mqtt_broker[1],
                                                topic_prefix=env["MQTT_PREFIX"],
                                                batch_max=2000))
    th = relay.start_thread()
    deadline = time.monotonic() + 240  # generous: the shared machine is slow
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        while unsent_count(conn):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    relay.stop()
    th.join(10)
