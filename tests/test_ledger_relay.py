"""Outbox relay against the real Mosquitto: everything arrives, across restarts, and a
repeat after a crash between publish and mark is identifiable by event id."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import trio
from mqttkit import Subscriber

from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.relay import OutboxRelay, RelayConfig, unsent_count
from payswitch.ledger.store import Ledger
from payswitch.ledger.types import Event

MAC = hmac_sha256(b"relay-test-key-0123456789")


class CrashOnce(OutboxRelay):
    """Dies after the broker acknowledged a round but before marking it sent."""

    crashed = False

    def _mark_sent(self, conn, seqs):
        if not self.crashed:
            CrashOnce.crashed = True
            raise OSError("simulated crash between publish and mark")
        super()._mark_sent(conn, seqs)


def _append(led, start, n):
    led.append_events([Event(start + i, "approved" if i % 2 else "received", {"n": start + i},
                             payment_id=start + i) for i in range(n)])


def _wait_sent(dsn, timeout_s=15):
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(dsn, autocommit=True) as c:
        while unsent_count(c):
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_relay_publishes_everything_across_restarts(pg_dsn, mqtt_broker):
    host, port = mqtt_broker
    CrashOnce.crashed = False
    prefix = f"test-{uuid.uuid4().hex[:10]}/"
    cfg = RelayConfig(host=host, port=port, topic_prefix=prefix, batch_max=10,
                      reconnect_backoff_s=0.05)
    with Subscriber(host, port, prefix) as sub, Ledger(pg_dsn, migrate=True, mac=MAC) as led:
        _append(led, 1, 25)
        # 1st relay: crashes after its first round was acknowledged, then carries on
        relay = CrashOnce(pg_dsn, cfg)
        th = relay.start_thread()
        _wait_sent(pg_dsn)
        relay.stop()
        th.join(10)
        assert not th.is_alive()
        # events written while no relay runs wait in the outbox
        _append(led, 100, 20)
        assert unsent_count(led.conn) == 20
        # 2nd relay, the trio way
        relay2 = OutboxRelay(pg_dsn, cfg)

        async def main():
            async with trio.open_nursery() as nursery:
                await nursery.start(relay2.run_trio)
                await trio.to_thread.run_sync(_wait_sent, pg_dsn)
                nursery.cancel_scope.cancel()

        trio.run(main)
        sub.wait_for(45)
    ids = [m["event_id"] for m in sub.messages]
    want = {str(uuid.UUID(int=i)) for i in [*range(1, 26), *range(100, 120)]}
    assert set(ids) == want  # nothing lost
    dups = len(ids) - len(set(ids))
    assert dups >= 10  # the crashed round was published twice; repeats share an event id
    assert CrashOnce.crashed
    by_id = {}
    for m in sub.messages:
        assert m["_topic"] == prefix + "payswitch/events/" + m["type"]
        assert by_id.setdefault(m["event_id"], m) == m  # a repeat is the same message
    seqs = sorted(by_id[i]["seq"] for i in by_id)
    assert seqs == list(range(1, 46))


class _WaitSeen(threading.Event):
    """The relay's stop event, telling when the relay first waits on it (an empty
    round done: it sleeps until the next poll or a stop)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def test_a_stop_with_drain_publishes_what_was_written_while_the_relay_slept(
        pg_dsn, mqtt_broker):
    """serve stops the relay (drain) right after its switch's last commit; the relay is
    then usually asleep between polls: it must look once more, not return at once."""
    host, port = mqtt_broker
    prefix = f"test-{uuid.uuid4().hex[:10]}/"
    cfg = RelayConfig(host=host, port=port, topic_prefix=prefix, poll_interval_s=60)
    with Subscriber(host, port, prefix) as sub, Ledger(pg_dsn, migrate=True, mac=MAC) as led:
        relay = OutboxRelay(pg_dsn, cfg)
        relay._stop = stop = _WaitSeen()
        th = relay.start_thread()
        assert stop.waiting.wait(15)  # asleep after an empty round, for 60 s
        _append(led, 1, 6)  # the switch's last events, committed
        relay.stop(drain_s=10)
        th.join(15)
        assert not th.is_alive()
        assert unsent_count(led.conn) == 0
        sub.wait_for(6)
    assert {m["event_id"] for m in sub.messages} == {str(uuid.UUID(int=i)) for i in range(1, 7)}
