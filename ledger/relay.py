"""Outbox relay: publishes events from the outbox to MQTT (QoS 1), then marks them sent.

At-least-once: an event is marked sent only after the broker's PUBACK, so a crash between
publish and mark means the event is published again after restart — never lost. Every
payload carries ``event_id`` (and ``seq``) so consumers drop duplicates.

One relay at a time per database (a session advisory lock); a second one waits. aiomqtt
and psycopg's async API are asyncio libraries, so the relay is an asyncio program; the
trio switch runs it in a thread of its own (``run_trio``), which keeps the two event loops
apart instead of mixing them through trio-asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass

import aiomqtt
import psycopg
import trio

from . import events as ev
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
    poll_interval_s: float = 0.05  # idle wait between rounds (a NOTIFY wakes it sooner)
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
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- asyncio ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Runs until stop() (or cancellation); reconnects to DB and broker on failure."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        failures = 0
        while not self._stop.is_set():
            try:
                await self._session()
                failures = 0
                continue
            except (psycopg.Error, aiomqtt.MqttError, OSError, LedgerError) as e:
                error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            except Exception as e:  # a bug must not end publishing for good: logged, retried
                log.error("outbox_relay_bug", exc_info=e)
                error = type(e).__name__
            # the first failure, then one line per RECONNECT_LOG_EVERY tries
            if failures % RECONNECT_LOG_EVERY == 0:
                log.warning("outbox_relay_reconnecting",
                            extra={"fields": {"error": error, "failures": failures + 1}})
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.reconnect_backoff_s)

    def stop(self) -> None:
        """Thread-safe: asks the relay to finish its current round and return."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _session(self) -> None:
        c = self.config
        options = f"-c search_path={c.schema}" if c.schema else None  # None: left out
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True,
                                                         options=options) as conn:
            while not (await (await conn.execute(
                    "select pg_try_advisory_lock(%s)",
                    (RELAY_LOCK_KEY,))).fetchone())[0]:  # type: ignore[index]  # one row
                if await self._idle(1.0):
                    return
            async with aiomqtt.Client(c.host, c.port, identifier=c.client_id,
                                      timeout=c.publish_timeout_s,
                                      max_inflight_messages=c.inflight_max) as client:
                client.pending_calls_threshold = c.inflight_max + 10  # we bound it ourselves
                while not self._stop.is_set():  # type: ignore[union-attr]  # set by run()
                    n = await self.publish_round(conn, client)
                    if n == 0 and await self._idle(c.poll_interval_s):
                        return

    async def _idle(self, seconds: float) -> bool:
        """Waits; True when asked to stop."""
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def publish_round(self, conn: psycopg.AsyncConnection,
                            client: aiomqtt.Client) -> int:
        """Publishes up to batch_max unsent events (QoS 1, all in flight at once), then marks
        them sent. Returns how many."""
        cur = await conn.execute(_SELECT_UNSENT, (self.config.batch_max,))
        rows = await cur.fetchall()
        if not rows:
            return 0
        msgs = []
        for seq, eid, etype, pid, tid, at, payload, pmac, mac, topic in rows:
            e = ev.StoredEvent(seq, eid.int, etype, pid.int if pid else None,
                               tid.int if tid else None, ev.us_from_datetime(at), payload,
                               bytes(pmac), bytes(mac))
            msgs.append((self.config.topic_prefix + topic, e.mqtt_payload()))
        # a sliding window, not stop-and-wait rounds: a broker without TCP_NODELAY (the
        # Mosquitto default) holds each PUBACK burst for a delayed-ACK period, so waiting
        # for a whole window before sending more caps the rate at window/40 ms
        window = asyncio.Semaphore(self.config.inflight_max)

        async def one(topic: str, payload: bytes) -> None:
            async with window:
                await client.publish(topic, payload, qos=1)

        await asyncio.gather(*(one(t, p) for t, p in msgs))
        self.published += len(msgs)
        await self._mark_sent(conn, [r[0] for r in rows])
        return len(rows)

    async def _mark_sent(self, conn: psycopg.AsyncConnection, seqs: list[int]) -> None:
        await conn.execute("update outbox set sent_at = now() where event_seq = any(%s)",
                           (seqs,))

    # -- threads and trio ------------------------------------------------------------------

    def start_thread(self) -> threading.Thread:
        """Runs the relay in a daemon thread with its own asyncio loop; stop() ends it."""
        th = threading.Thread(target=asyncio.run, args=(self.run(),), name="outbox-relay",
                              daemon=True)
        th.start()
        return th

    async def run_trio(self, *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """For the trio switch: ``nursery.start_soon(relay.run_trio)``. Cancelling the task
        stops the relay thread (it finishes its current round first)."""
        ready = threading.Event()

        def main() -> None:
            async def go() -> None:
                self._loop = asyncio.get_running_loop()
                ready.set()
                await self.run()
            asyncio.run(go())

        th = threading.Thread(target=main, name="outbox-relay", daemon=True)
        th.start()
        await trio.to_thread.run_sync(ready.wait)
        task_status.started()
        try:
            await trio.to_thread.run_sync(th.join, abandon_on_cancel=True)
        finally:
            with trio.CancelScope(shield=True):
                for _ in range(200):  # the loop may not have created _stop yet
                    self.stop()
                    if self._stop is not None:
                        break
                    await trio.sleep(0.01)
                await trio.to_thread.run_sync(th.join)


def unsent_count(conn: psycopg.Connection) -> int:
    row = conn.execute("select count(*) from outbox where sent_at is null").fetchone()
    return row[0] if row else 0
