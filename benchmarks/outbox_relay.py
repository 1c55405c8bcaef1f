"""Outbox relay benchmark: events/s and CPU µs per event of ``OutboxRelay`` publishing
a backlog of outbox rows to Mosquitto (QoS 1, each marked sent after its PUBACK),
against bare publish loops of the same payloads to the same broker in the same run.

Load: ``RELAY_BENCH_EVENTS`` events (default 20,000) in the outbox of a scratch
database, shaped like the switch's (``received`` with masked PAN, amount, STAN...,
``routed``, ``approved``, ``held``), under a topic prefix of their own. Rows:

* ``relay``: ``OutboxRelay`` from a cold start (connect, lock) until the outbox is
  empty: SELECT a round, build the payloads, publish, UPDATE sent. CPU is this
  process's (the relay runs in a thread; the main thread only waits).
* ``publisher``: the relay's ``Publisher`` alone (paho's client driven by ``loop()``
  calls on the caller's thread), the same payloads in rounds of the relay's
  ``batch_max``, without the database; ``publisher_noquickack``: the same without
  TCP_QUICKACK on its socket (Mosquitto's delayed PUBACKs at the tail of each round).
* ``paho loop``: paho-mqtt's client with its own network thread (``loop_start``), the
  same payloads and topics already built, ``max_inflight_messages`` = the relay's
  window, all published at once, until every PUBACK.
* ``aiomqtt loop``: what the relay did before (aiomqtt, a semaphore window over
  ``asyncio.gather``), same payloads, without the database.

The payloads of the loops are the relay's (``StoredEvent.mqtt_payload``); their cost
of building them is not in the loops' figures. CPU of Mosquitto and PostgreSQL is not
counted (it is the same work in every row). Works with any version of
``payswitch.ledger.relay`` that has ``start_thread``/``stop`` (before/after: run it
with another checkout's interpreter from this directory).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import os
import threading
import time
import uuid

import psycopg

from payswitch.lab import realparts
from payswitch.ledger import events as ev
from payswitch.ledger import relay as relaymod
from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.relay import OutboxRelay, RelayConfig
from payswitch.ledger.store import Ledger
from payswitch.ledger.types import Event

WINDOW = 100  # in flight at once: the relay's default relay_inflight_max
WAIT_S = 300.0  # bound on any one phase


def _events(n: int) -> list[Event]:
    out = []
    for i in range(n):
        k = i % 4
        data: dict = (
            {"mti": "0100", "stan": f"{i % 999_999:06d}", "terminal_id": "TERM0001",
             "pan_masked": "411111******1111", "amount_minor": 1000 + i % 500,
             "currency": "840", "processing_code": "000000"} if k == 0 else
            {"route": "visa"} if k == 1 else
            {"response_code": "00", "auth_code": "A1B2C3"} if k == 2 else
            {"amount_minor": 1000 + i % 500, "ledger": 840})
        out.append(Event(10**9 + i, ("received", "routed", "approved", "held")[k], data,
                         payment_id=10**8 + i // 4))
    return out


def _unsent(conn: psycopg.Connection) -> int:
    return conn.execute("select count(*) from outbox where sent_at is null").fetchone()[0]


def _payloads(dsn: str, prefix: str) -> list[tuple[str, bytes]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute(
            "select e.seq, e.id, e.type, e.payment_id, e.transfer_id, e.occurred_at,"
            " e.payload, e.prev_mac, e.mac, o.topic from outbox o join events e"
            " on e.seq = o.event_seq order by o.event_seq").fetchall()
    out = []
    for seq, eid, etype, pid, tid, at, payload, pmac, mac, topic in rows:
        e = ev.StoredEvent(seq, eid.int, etype, pid.int if pid else None,
                           tid.int if tid else None, ev.us_from_datetime(at), payload,
                           bytes(pmac), bytes(mac))
        out.append((prefix + topic, e.mqtt_payload()))
    return out


def _measure(fn) -> dict:  # type: ignore[no-untyped-def]
    cpu0, t0 = time.process_time(), time.perf_counter()
    n = fn()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return {"events": n, "seconds": round(wall, 3), "events_per_s": round(n / wall),
            "cpu_us_per_event": round(cpu / n * 1e6, 1)}


def _relay(dsn: str, host: str, port: int, prefix: str, n: int) -> int:
    relay = OutboxRelay(dsn, RelayConfig(host=host, port=port, topic_prefix=prefix,
                                         inflight_max=WINDOW, poll_interval_s=0.01))
    deadline = time.monotonic() + WAIT_S
    with psycopg.connect(dsn, autocommit=True) as watch:  # one connection: little CPU
        th = relay.start_thread()
        while _unsent(watch) and time.monotonic() < deadline:
            time.sleep(0.02)
        relay.stop()
        th.join(30)
        assert not _unsent(watch), "the relay did not publish everything in time"
    return n


def _publisher(host: str, port: int, msgs: list[tuple[str, bytes]], quickack: bool) -> int:
    saved = relaymod._QUICKACK
    if not quickack:
        relaymod._QUICKACK = None
    try:
        pub = relaymod.Publisher(host, port, f"bench-pub-{os.getpid()}", inflight_max=WINDOW,
                                 timeout_s=WAIT_S)
        try:
            batch = RelayConfig().batch_max
            for k in range(0, len(msgs), batch):
                pub.publish_all(msgs[k:k + batch])
        finally:
            pub.close()
    finally:
        relaymod._QUICKACK = saved
    return len(msgs)


def _paho(host: str, port: int, msgs: list[tuple[str, bytes]]) -> int:
    import paho.mqtt.client as mqtt

    done = threading.Event()
    acked = [0]

    def on_publish(client, userdata, mid, reason_code=None, properties=None):  # type: ignore[no-untyped-def]
        acked[0] += 1
        if acked[0] == len(msgs):
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.max_inflight_messages_set(WINDOW)
    c.max_queued_messages_set(0)  # unbounded queue: publish() never refuses
    c.on_publish = on_publish
    c.connect(host, port)
    c.loop_start()
    try:
        for topic, payload in msgs:
            c.publish(topic, payload, qos=1)
        assert done.wait(WAIT_S), f"paho: {acked[0]} of {len(msgs)} acknowledged"
    finally:
        c.disconnect()
        c.loop_stop()
    return len(msgs)


def _aiomqtt(host: str, port: int, msgs: list[tuple[str, bytes]]) -> int:
    import aiomqtt

    async def main() -> None:
        async with aiomqtt.Client(host, port, max_inflight_messages=WINDOW) as client:
            client.pending_calls_threshold = WINDOW + 10
            window = asyncio.Semaphore(WINDOW)

            async def one(topic: str, payload: bytes) -> None:
                async with window:
                    await client.publish(topic, payload, qos=1)
            await asyncio.wait_for(asyncio.gather(*(one(t, p) for t, p in msgs)), WAIT_S)

    asyncio.run(main())
    return len(msgs)


def run(n: int) -> dict:
    mac = hmac_sha256(b"bench-relay-key-0123456789abcdef")
    with realparts.postgres_server() as admin, \
            realparts.scratch_database(admin, "payswitch_bench_relay") as dsn, \
            realparts.mosquitto_broker() as (host, port):
        prefix = f"bench-{uuid.uuid4().hex[:8]}/"
        events = _events(n)
        with Ledger(dsn, migrate=True, mac=mac) as led:
            for k in range(0, n, 2000):
                led.append_events(events[k:k + 2000])
            led.conn.execute("vacuum analyze outbox")  # type: ignore[union-attr]
        msgs = _payloads(dsn, prefix)
        result = {
            "relay": _measure(lambda: _relay(dsn, host, port, prefix, n)),
            **({"publisher": _measure(lambda: _publisher(host, port, msgs, True)),
                "publisher_noquickack": _measure(lambda: _publisher(host, port, msgs, False))}
               if hasattr(relaymod, "Publisher") else {}),
            "paho_loop": _measure(lambda: _paho(host, port, msgs)),
            "aiomqtt_loop": _measure(lambda: _aiomqtt(host, port, msgs)),
        }
        result["payload_bytes_mean"] = round(sum(len(p) for _, p in msgs) / len(msgs))
        result["window"] = WINDOW
        result["loadavg"] = [f"{x:.2f}" for x in os.getloadavg()]
        result["utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return result


def main(json: bool = False) -> int:
    n = int(os.environ.get("RELAY_BENCH_EVENTS", "20000"))
    result = run(n)
    if json:
        print(jsonlib.dumps(result))
        return 0
    print(f"outbox relay, {n} events, window {WINDOW}, {result['payload_bytes_mean']} B "
          f"payloads, {result['utc']}, load {' '.join(result['loadavg'])}")
    for name in ("relay", "publisher", "publisher_noquickack", "paho_loop", "aiomqtt_loop"):
        if name not in result:
            continue
        d = result[name]
        print(f"  {name:20s} {d['events_per_s']:>8,} events/s  "
              f"{d['cpu_us_per_event']:>7.1f} µs CPU/event  ({d['seconds']} s)")
    return 0
