"""Outbox relay: publishes events from the outbox to MQTT (QoS 1), then marks them sent.

At-least-once: an event is marked sent only after the broker's PUBACK, so a crash between
publish and mark means the event is published again after restart, never lost. Every
payload carries ``event_id`` (and ``seq``) so consumers drop duplicates.

One relay at a time per database (a session advisory lock); a second one waits. The relay
is a blocking loop (psycopg's sync API, ``mqtt.QosPublisher`` on a socket): ``payswitch
serve`` runs it in a process of its own (``payswitch.switch.relayproc``), off the
switch's GIL; ``start_thread`` / ``run_trio`` run it in a thread (tests, embedding).

A round: up to ``batch_max`` unsent rows in one SELECT, all published with at most
``inflight_max`` awaiting their PUBACK (a sliding window: the next publishes go out as
acknowledgements come in), then one UPDATE marks the round sent.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass

import psycopg
import trio

from . import events as ev
from .mqtt import QosPublisher
from .types import LedgerError

# event name as the message, values in extra={"fields": ...}: see writer.py
log = logging.getLogger("payswitch.ledger.relay")
RECONNECT_LOG_EVERY = 20  # while the database or broker is down: one line per this many
RELAY_LOCK_KEY = 0x7061797377697463  # "payswitc": one relay per database


@dataclass
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = ""  # prepended to "payswitch/events/<type>" (tests isolate with it)
    batch_max: int = 500  # events per round
    inflight_max: int = 100  # QoS 1 publishes awaiting PUBACK at once
    poll_interval_s: float = 0.05  # idle wait between rounds (stop() ends it at once)
    publish_timeout_s: float = 10.0
    reconnect_backoff_s: float = 0.5
    client_id: str | None = None
    schema: str | None = None


_SELECT_UNSENT = (
    "select e.seq, e.id, e.type, e.payment_id, e.transfer_id, e.occurred_at, e.payload, "
    "e.prev_mac, e.mac, o.topic from outbox o join events e on e.seq = o.event_seq "
    "where o.sent_at is null order by o.event_seq limit %s")


class OutboxRelay:
    def __init__(self, dsn: str, config: RelayConfig | None = None) -> None:
        self.dsn = dsn
        self.config = config or RelayConfig()
        self.published = 0  # publishes acknowledged by the broker (incl. repeats)
        self._stop = threading.Event()
        self._drain_until = 0.0  # monotonic: a stop that drains publishes until then
        self._topics: dict[str, bytes] = {}

    def run(self) -> None:
        """Blocks until stop(); reconnects to database and broker on failure. After
        ``stop(drain_s)`` (even one called before run) it publishes what is unsent, then
        returns."""
        failures = 0
        while self._draining():
            try:
                self._session()
                return  # a session ends only when asked to stop
            except (psycopg.Error, OSError, LedgerError) as e:  # MqttError is an OSError
                error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            except Exception as e:  # a bug must not end publishing for good: logged, retried
                log.error("outbox_relay_bug", exc_info=e)
                error = type(e).__name__
            # the first failure, then one line per RECONNECT_LOG_EVERY tries
            if failures % RECONNECT_LOG_EVERY == 0:
                log.warning("outbox_relay_reconnecting",
                            extra={"fields": {"error": error, "failures": failures + 1}})
            failures += 1
            if self._stop.wait(self.config.reconnect_backoff_s):
                return  # asked to stop: no reconnecting for a drain

    def stop(self, drain_s: float = 0.0) -> None:
        """Thread-safe (and safe in a signal handler): asks the relay to return. With
        ``drain_s``, a relay that is publishing carries on until the outbox is empty or
        ``drain_s`` has passed (the last events of a switch's drain); one that is
        reconnecting or waiting for the lock returns at once."""
        self._drain_until = time.monotonic() + drain_s
        self._stop.set()

    def _draining(self) -> bool:
        return not self._stop.is_set() or time.monotonic() < self._drain_until

    def _session(self) -> None:
        c = self.config
        options = f"-c search_path={c.schema}" if c.schema else None  # None: left out
        with psycopg.connect(self.dsn, autocommit=True, options=options,
                             connect_timeout=max(1, int(c.publish_timeout_s))) as conn:
            while not (conn.execute("select pg_try_advisory_lock(%s)",
                                    (RELAY_LOCK_KEY,)).fetchone())[0]:  # type: ignore[index]
                if self._stop.wait(1.0):
                    return
            client_id = c.client_id or f"payswitch-relay-{os.getpid()}-{secrets.token_hex(4)}"
            pub = QosPublisher(c.host, c.port, client_id, timeout_s=c.publish_timeout_s,
                               inflight_max=c.inflight_max)
            try:
                while self._draining():
                    n = self.publish_round(conn, pub)
                    if n == 0:
                        if self._stop.is_set() or self._stop.wait(c.poll_interval_s):
                            return  # asked to stop with nothing left to publish
                        pub.keepalive()
            finally:
                pub.close()

    def publish_round(self, conn: psycopg.Connection, pub: QosPublisher) -> int:
        """Publishes up to batch_max unsent events (QoS 1, a window in flight), then marks
        them sent. Returns how many."""
        rows = conn.execute(_SELECT_UNSENT, (self.config.batch_max,)).fetchall()
        if not rows:
            return 0
        msgs = []
        for seq, eid, etype, pid, tid, at, payload, pmac, mac, topic in rows:
            e = ev.StoredEvent(seq, eid.int, etype, pid.int if pid else None,
                               tid.int if tid else None, ev.us_from_datetime(at), payload,
                               bytes(pmac), bytes(mac))
            msgs.append((self._topic(topic), e.mqtt_payload()))
        pub.publish_all(msgs)
        self.published += len(msgs)
        self._mark_sent(conn, [r[0] for r in rows])
        return len(rows)

    def _topic(self, topic: str) -> bytes:
        t = self._topics.get(topic)
        if t is None:  # a handful of event types: encoded once each
            t = self._topics[topic] = (self.config.topic_prefix + topic).encode()
        return t

    def _mark_sent(self, conn: psycopg.Connection, seqs: list[int]) -> None:
        conn.execute("update outbox set sent_at = now() where event_seq = any(%s)", (seqs,))

    # -- threads and trio ------------------------------------------------------------------

    def start_thread(self) -> threading.Thread:
        """Runs the relay in a daemon thread; stop() ends it."""
        th = threading.Thread(target=self.run, name="outbox-relay", daemon=True)
        th.start()
        return th

    async def run_trio(self, *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """For a trio program: ``nursery.start(relay.run_trio)``. Cancelling the task
        stops the relay thread (it finishes its current round first)."""
        th = self.start_thread()
        task_status.started()
        try:
            await trio.to_thread.run_sync(th.join, abandon_on_cancel=True)
        finally:
            self.stop()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(th.join)


def unsent_count(conn: psycopg.Connection) -> int:
    row = conn.execute("select count(*) from outbox where sent_at is null").fetchone()
    return row[0] if row else 0
