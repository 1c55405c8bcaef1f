"""Issue 8's worker test: `payswitch serve --workers 2` (ledger and relay on) under load
from terminals; one worker SIGKILLed at random moments 5 times, the parent starting it
again each time while the other worker keeps serving. Afterwards: `ledger verify` is
clean, every approval a terminal received has exactly one hold (still pending), every
request the switch timed out or recovered has its reversal acknowledged by the issuer,
nothing is applied twice, and every event reached MQTT.

The checks are those of test_switch_ledger_crash.py (one process killed whole), with a
second process alive throughout: its open requests must not be taken over by the
restarted worker's recovery."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
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



def _workers(proc) -> set[int]:
    """The parent's child processes (every thread's: trio forks from a worker thread)
    but its outbox relay's (the pids of its relay_started lines)."""
    parent = proc.pid
    found: set[int] = set()
    for tid in os.listdir(f"/proc/{parent}/task"):
        with contextlib.suppress(FileNotFoundError), \
                open(f"/proc/{parent}/task/{tid}/children") as f:
            found |= {int(x) for x in f.read().split()}
    relays = {json.loads(line)["pid"] for line in proc.stderr_text().splitlines()
              if '"relay_started"' in line}
    return found - relays


def _wait_for(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _scalar(dsn: str, sql: str, *args) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchone()[0]


@pytest.mark.slow
def test_two_workers_one_sigkilled_five_times_keep_ledger_and_reversals_whole(
        pg_dsn, mqtt_broker, tmp_path):
    mac_key = secrets.token_hex(32)
    env = {"PAYSWITCH_EVENT_MAC_KEY": mac_key, "PAYSWITCH_PAN_TOKEN_KEY": secrets.token_hex(32)}
    prefix = f"workers-{uuid.uuid4().hex[:8]}/"
    rng = random.Random(8)
    with contextlib.ExitStack() as stack, Subscriber(*mqtt_broker, prefix) as sub:
        ports = {net: start_simulator(stack, net, str(tmp_path), "--latency-ms", "2")[1]
                 for net in ("visa", "mastercard")}
        config = tmp_path / "switch.toml"
        config.write_text(demo_config(ports["visa"], ports["mastercard"], ledger=True,
                                      terminals=TERMINALS, issuer_timeout_ms=2000,
                                      ledger_relay=(*mqtt_broker, prefix)))
        proc, listeners = start_switch(stack, str(config), str(tmp_path), pg_dsn, env,
                                       workers=2)
        _wait_for(lambda: len(_workers(proc)) == 2, 30, "two workers")
        load = Load(listeners["pos"][1], TERMINALS, CARDS)
        load.thread.start()
        killed = set()
        for _ in range(KILLS):
            time.sleep(1.5 + rng.random() * 2.0)
            assert proc.popen.poll() is None, proc.tail()
            victim = rng.choice(sorted(_workers(proc)))
            os.kill(victim, signal.SIGKILL)  # mid-load; the other worker keeps serving
            killed.add(victim)
            _wait_for(lambda: len(_workers(proc) - killed) == 2, 30,  # noqa: B023
                      f"the parent restarts the worker{proc.tail()}")
        # enough traffic even on a loaded machine, then stop the load and let the
        # restarted workers' recovery, reversals and relay finish
        time.sleep(3.0)
        _wait_for(lambda: load.sent > 300, 90, f"300 requests sent ({load.sent})")
        load.stop.set()
        load.thread.join(15)
        _wait_for(lambda: _scalar(pg_dsn, "select count(*) from switch_saf"
                                          " where state = 'pending'") == 0, 60,
                  "every reversal acknowledged")
        _wait_for(lambda: _scalar(pg_dsn, "select count(*) from outbox"
                                          " where sent_at is null") == 0, 30, "outbox sent")
        time.sleep(1.0)  # the recovered requests' voids (background) are done
        assert proc.stop() == 0, proc.tail()
        with psycopg.connect(pg_dsn) as conn:
            all_ids = {str(r[0]) for r in conn.execute("select id from events")}
        _wait_for(lambda: all_ids <= sub.ids, 15, "every event on MQTT")

    approved = load.with_code("00")
    assert load.sent > 300 and len(approved) > 100, (load.sent, len(approved))
    # a 96 is rare: at most what a kill left waiting on the dead worker's row locks
    # (0-3 in four runs). When two writers' batch reads dropped rows locked by the
    # other (ledger/store.py, _READ_A) this load saw 21 and 29.
    refused = load.with_code("96")
    assert len(refused) <= 2 * KILLS, (len(refused), load.sent)
    mac = L.hmac_sha256(bytes.fromhex(mac_key))
    with psycopg.connect(pg_dsn) as conn:
        report = L.verify(conn, mac)
        assert report.ok and report.ledger_balanced, report.to_text()
        # every approval a terminal received: exactly one hold, still pending
        holds = [uuid.UUID(int=det_id("hold", k)) for k in approved]
        states = dict(conn.execute("select id, state from pending_transfers"
                                   " where id = any(%s)", (holds,)).fetchall())
        missing = [h for h in holds if states.get(h) != "pending"]
        assert not missing, f"{len(missing)} approvals without a pending hold"
        # nothing applied twice: one hold, one held and one approved event per payment
        twice = conn.execute("select payment_id, type from events where type in"
                             " ('approved', 'held') group by payment_id, type"
                             " having count(*) > 1").fetchall()
        assert not twice, twice[:5]
        (n_holds,) = conn.execute("select count(*) from transfers where flags & 2 = 2"
                                  ).fetchone()
        (n_held,) = conn.execute("select count(*) from events where type = 'held'").fetchone()
        assert n_holds == n_held
        # every request answered 91 (timed out at the issuer, or recovered after a kill)
        # that had reached an issuer: its reversal queued once and acknowledged
        unanswered = conn.execute(
            "select d.dup_key, count(s.id), count(s.id) filter (where s.state = 'acked')"
            " from switch_dedup d"
            " join switch_journal j on j.dup_key = d.dup_key and j.event = 'issuer_request'"
            " left join switch_saf s on s.dup_key = d.dup_key and s.mti like '042%%'"
            " where d.response->>'response_code' = '91' group by d.dup_key").fetchall()
        bad = [(k, n, acked) for k, n, acked in unanswered if n != 1 or acked != 1]
        assert not bad, f"{len(bad)} timeouts without exactly one acknowledged reversal"
        assert conn.execute("select count(*) from switch_saf where state <> 'acked'"
                            ).fetchone()[0] == 0
        # a request recovered after a kill was answered 91: a hold it left is voided
        keys = [r[0] for r in conn.execute("select dup_key from switch_journal"
                                           " where event = 'recovered'")]
        left = conn.execute("select count(*) from pending_transfers where id = any(%s)"
                            " and state = 'pending'",
                            ([uuid.UUID(int=det_id("hold", k)) for k in keys],)).fetchone()[0]
        assert left == 0, f"{left} holds of requests answered 91 after a kill not voided"
        # (a live worker's request taken over by a restarted one would show above: its
        # approval, told to the terminal, reversed and its hold voided)
        # no request answered 00 to its terminal was later recorded as 91
        told_91 = set(load.with_code("91"))
        assert not told_91 & set(approved)
    print(f"workers test: sent {load.sent}, approvals {len(approved)}, 96s {len(refused)},"
          f" 91s {len(told_91)},"
          f" recovered {len(keys)}, timeouts reversed {len(unanswered)}, events {len(all_ids)}")
