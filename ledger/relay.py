"""Outbox relay: publishes events from the outbox to MQTT (QoS 1), then marks them sent.

At-least-once: an event is marked sent only after the broker's PUBACK, so a crash between
publish and mark means the event is published again after restart, never lost. Every
payload carries ``event_id`` (and ``seq``) so consumers drop duplicates.

One relay at a time per database (a session advisory lock); a second one waits. The relay
is a blocking loop (psycopg's sync API, paho-mqtt's client driven by ``loop()`` calls on
the relay's own thread: ``Publisher``): ``payswitch serve`` runs it in a process of its
own (``payswitch.switch.relayproc``), off the switch's GIL; ``start_thread`` /
``run_trio`` run it in a thread (tests, embedding).

A round: up to ``batch_max`` unsent rows in one SELECT, all published with at most
``inflight_max`` awaiting their PUBACK (a sliding window: the next publishes go out as
acknowledgements come in), then one UPDATE marks the round sent.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import paho.mqtt.client as paho
import psycopg
import trio

from . import events as ev
from .types import LedgerError

# event name as the message, values in extra={"fields": ...}: see writer.py
log = logging.getLogger("payswitch.ledger.relay")
RECONNECT_LOG_EVERY = 20  # while the database or broker is down: one line per this many
RELAY_LOCK_KEY = 0x7061797377697463  # "payswitc": one relay per database
LOOP_STEP_S = 1.0  # longest single wait on paho's socket; deadlines are checked between
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class MqttError(OSError):
    """The broker refused, went away or went silent: reconnect and publish again."""


class Publisher:
    """paho-mqtt's client (MQTT 3.1.1, clean session) on the caller's thread: no network
    thread of its own; while a round waits for its PUBACKs, the publisher select()s on
    paho's socket and calls its loop_read/loop_write/loop_misc. ``publish_all`` returns
    once every message has its PUBACK (``on_publish`` by mid), at most ``inflight_max``
    unacknowledged at a time. Any failure (refused, connection lost, no progress for
    ``timeout_s``) raises MqttError or OSError: the caller closes this publisher, makes
    a new one and publishes the round again (at least once). paho's own reconnecting is
    not used: it would resend behind the relay's back.

    The window is kept here, not by paho's ``max_inflight_messages``: with that set,
    paho walks its whole queue of messages on every PUBACK to find the next to send
    (``_update_inflight``), 10 µs of CPU per event in a round of 500 (ledger/README.md);
    with it unlimited (0) paho sends each publish at once and the publisher hands it
    the next one only when a PUBACK made room."""

    def __init__(self, host: str, port: int, client_id: str, *, timeout_s: float = 10.0,
                 keepalive_s: int = 60, inflight_max: int = 100) -> None:
        if inflight_max < 1:
            raise ValueError("inflight_max must be at least 1")
        self.timeout_s = timeout_s
        self.inflight_max = inflight_max
        self._acked: set[int] = set()
        self._connack: paho.ReasonCode | None = None
        c = self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                       protocol=paho.MQTTv311, clean_session=True)
        c.max_inflight_messages_set(0)  # unlimited: the window is publish_all's
        c.max_queued_messages_set(0)  # unbounded (nothing is queued: see above)
        c.connect_timeout = timeout_s  # the TCP connect
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        try:
            c.connect(host, port, keepalive=keepalive_s)  # sends CONNECT; OSError if refused
            deadline = time.monotonic() + timeout_s
            while self._connack is None:
                self._step(deadline, "no CONNACK")
            if self._connack.is_failure:
                raise MqttError(f"broker refused the connection: {self._connack}")
        except BaseException:
            self.close()
            raise

    def _on_connect(self, client: paho.Client, userdata: object, flags: object,
                    reason_code: paho.ReasonCode, properties: object) -> None:
        self._connack = reason_code

    def _on_publish(self, client: paho.Client, userdata: object, mid: int,
                    reason_code: object, properties: object) -> None:
        self._acked.add(mid)

    def _step(self, deadline: float, silent: str, wait: bool = True) -> None:
        """Waits (up to LOOP_STEP_S) for the socket, then paho reads what came, writes
        what is queued and pings when due: its loop_read/loop_write/loop_misc, the API
        for a caller's own select(). Not ``loop()``: that adds a socketpair paho writes
        a byte to on every publish (to wake its select), a syscall per event."""
        c = self._client
        left = deadline - time.monotonic()
        if left <= 0:
            raise MqttError(f"{silent} within {self.timeout_s} s")
        sock = c.socket()
        if not isinstance(sock, socket.socket):
            raise MqttError("connection to the broker lost")
        if _QUICKACK is not None:
            # Mosquitto sends without TCP_NODELAY (its default): its later PUBACKs wait
            # in its Nagle buffer until we ACK the first, and Linux delays that ACK (up
            # to 40 ms) when we have nothing to send, at the tail of each round.
            # QUICKACK (reset by the kernel after a while, hence before each wait) ACKs
            # at once. Brokers with `set_tcp_nodelay true` do not need it.
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        readable, writable, _ = select.select(
            [sock], [sock] if c.want_write() else [], [],
            min(left, LOOP_STEP_S) if wait else 0)
        for rc in ((c.loop_read() if readable else paho.MQTT_ERR_SUCCESS),
                   (c.loop_write() if writable else paho.MQTT_ERR_SUCCESS),
                   c.loop_misc()):
            if rc != paho.MQTT_ERR_SUCCESS:
                raise MqttError(f"connection to the broker lost: {paho.error_string(rc)}")

    def publish_all(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """(topic, payload) pairs, QoS 1; returns when the broker acknowledged all."""
        publish, window, n = self._client.publish, self.inflight_max, len(messages)
        waiting: set[int] = set()
        sent = 0
        deadline = time.monotonic() + self.timeout_s
        while True:
            while sent < n and len(waiting) < window:
                topic, payload = messages[sent]
                info = publish(topic, payload, qos=1)  # written to the socket at once
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    raise MqttError(f"publish failed: {paho.error_string(info.rc)}")
                waiting.add(info.mid)
                sent += 1
            if self._acked:
                before = len(waiting)
                waiting -= self._acked
                self._acked.clear()
                if len(waiting) < before:
                    deadline = time.monotonic() + self.timeout_s  # progress
                    continue  # room in the window: publish more before waiting
            if not waiting and sent == n:
                return
            self._step(deadline, "no PUBACK")

    def keepalive(self) -> None:
        """Between rounds: paho sends its PINGREQ when due and notices a dead broker
        (no PINGRESP) before the next event. Does not wait."""
        self._step(time.monotonic() + self.timeout_s, "broker silent", wait=False)

    def close(self) -> None:
        """DISCONNECT, then the socket closed: paho closes it once the DISCONNECT is
        written, not when it could not be (a full send buffer); the publisher is not
        used again either way."""
        sock = self._client.socket()
        try:
            self._client.disconnect()
        finally:
            if sock is not None:
                sock.close()


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
        self._topics: dict[str, str] = {}

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
        ``drain_s``, a relay that is publishing or asleep between polls carries on until a
        round finds the outbox empty or ``drain_s`` has passed (the last events of a
        switch's drain); one that is reconnecting or waiting for the lock returns at once."""
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
            pub = Publisher(c.host, c.port, client_id, timeout_s=c.publish_timeout_s,
                               inflight_max=c.inflight_max)
            try:
                while self._draining():
                    n = self.publish_round(conn, pub)
                    if n == 0:
                        if self._stop.is_set():
                            return  # asked to stop, and a round since found nothing left
                        if not self._stop.wait(c.poll_interval_s):
                            pub.keepalive()
                        # else stopped while asleep: one more round (the drain's last
                        # events may have been committed meanwhile)
            finally:
                pub.close()

    def publish_round(self, conn: psycopg.Connection, pub: Publisher) -> int:
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

    def _topic(self, topic: str) -> str:
        t = self._topics.get(topic)
        if t is None:  # a handful of event types: one string each
            t = self._topics[topic] = self.config.topic_prefix + topic
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
