"""The outbox relay as `payswitch serve` runs it: a process of its own, beside the switch
(or beside the workers), against the real Mosquitto and PostgreSQL.

It publishes the events the switch writes; `serve`'s SIGTERM stops it after the
switch's drain, with nothing left unsent; SIGKILLed mid-batch it is started again and
nothing is lost (repeats allowed: at least once, consumers dedupe by event_id); the
broker stopped and started again on its port, it reconnects by itself and publishes
what waited in the outbox."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
import uuid

import psycopg
import pytest
from mqttkit import Subscriber

from payswitch.lab import realparts
from payswitch.lab.demo import (
    Proc,
    demo_config,
    payswitch_argv,
    start_simulator,
    start_switch,
)
from payswitch.ledger.events import hmac_sha256
from payswitch.ledger.store import Ledger
from payswitch.ledger.types import Event
from payswitch.simulators.cards import BY_NAME

from .crashkit import Load

CARDS = [BY_NAME[n] for n in ("visa_approve", "mastercard_approve", "mastercard_approve_2")]
WAIT_S = 60.0
UNLIMITED_QUEUE = "max_queued_messages 0"


def _unsent(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select count(*) from outbox where sent_at is null").fetchone()[0]


def _event_ids(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {str(r[0]) for r in conn.execute("select id from events")}


def _until(what, timeout_s: float = WAIT_S, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting for {what.__name__}"
        time.sleep(poll_s)


def _relay_pids(proc) -> list[int]:
    """Pids of the relay processes `serve` started, in order (its relay_started lines)."""
    out = []
    for line in proc.stderr_text().splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if rec.get("event") == "relay_started":
                out.append(int(rec["pid"]))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


class _Serve:
    """`payswitch serve` (ledger and relay on) beside the two network simulators."""

    def __init__(self, stack: contextlib.ExitStack, tmp_path, dsn: str,
                 broker: tuple[str, int], prefix: str, workers: int = 1) -> None:
        self.mac_key = secrets.token_hex(32)
        env = {"PAYSWITCH_EVENT_MAC_KEY": self.mac_key,
               "PAYSWITCH_PAN_TOKEN_KEY": secrets.token_hex(32)}
        ports = {net: start_simulator(stack, net, str(tmp_path))[1]
                 for net in ("visa", "mastercard")}
        config = tmp_path / "switch.toml"
        config.write_text(demo_config(ports["visa"], ports["mastercard"], ledger=True,
                                      terminals=4, ledger_relay=(*broker, prefix)))
        self.proc, listeners = start_switch(stack, str(config), str(tmp_path), dsn, env,
                                            workers=workers)
        self.pos_port = listeners["pos"][1]
        _until(lambda: _relay_pids(self.proc), 10)
        self.dsn = dsn

    @property
    def relay_pid(self) -> int:
        return _relay_pids(self.proc)[-1]

    def append(self, start: int, n: int) -> set[str]:
        """``n`` events written straight to the ledger (the outbox the relay reads)."""
        mac = hmac_sha256(bytes.fromhex(self.mac_key))
        with Ledger(self.dsn, mac=mac) as led:
            for k in range(0, n, 2000):
                led.append_events([Event(start + i, "approved", {"n": start + i},
                                         payment_id=start + i)
                                   for i in range(k, min(n, k + 2000))])
        return {str(uuid.UUID(int=start + i)) for i in range(n)}


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_runs_the_relay_in_its_own_process_and_stops_it_after_the_drain(
        pg_dsn, mqtt_broker, tmp_path, workers):
    prefix = f"relayproc-{uuid.uuid4().hex[:8]}/"
    with contextlib.ExitStack() as stack, Subscriber(*mqtt_broker, prefix) as sub:
        serve = _Serve(stack, tmp_path, pg_dsn, mqtt_broker, prefix, workers)
        relay = serve.relay_pid
        # one relay, a child of serve (the parent of the workers), not a switch thread
        assert relay != serve.proc.pid and _ppid(relay) == serve.proc.pid
        assert len(_relay_pids(serve.proc)) == 1
        load = Load(serve.pos_port, 4, CARDS)
        load.thread.start()
        _until(lambda: len(load.answers) >= 50)
        # SIGTERM while the terminals still send: the switch drains, then the relay
        # publishes the drain's last events, then it exits, then serve
        assert serve.proc.stop() == 0, serve.proc.tail()
        load.stop.set()
        load.thread.join(15)
        assert not _alive(relay)
        assert _unsent(pg_dsn) == 0
        ids = _event_ids(pg_dsn)
        assert len(ids) >= 50 * 4
        sub.wait_for(len(ids))
    assert sub.ids == ids
    log = serve.proc.stderr_text()
    # the relay stopped once the switch (every worker) had: its line comes last
    assert log.rindex('"relay_stopped"') > log.rindex('"switch_stopped"')


def test_relay_sigkilled_mid_batch_is_restarted_and_loses_nothing(pg_dsn, mqtt_broker,
                                                                  tmp_path):
    prefix = f"relaykill-{uuid.uuid4().hex[:8]}/"
    total = 30_000
    # mqtt_broker queues without limit for the subscriber, which the relay outpaces
    with contextlib.ExitStack() as stack, Subscriber(*mqtt_broker, prefix) as sub:
        serve = _Serve(stack, tmp_path, pg_dsn, mqtt_broker, prefix)
        first = serve.relay_pid
        want = serve.append(10**9, total)
        _until(lambda: _unsent(pg_dsn) < total - 1000, poll_s=0.005)  # publishing
        os.kill(first, signal.SIGKILL)
        left = _unsent(pg_dsn)
        assert left > 0, "the relay had finished before the kill: a bigger backlog"
        _until(lambda: len(_relay_pids(serve.proc)) == 2)  # started again by serve
        assert _alive(serve.proc.pid)  # the switch carries on
        _until(lambda: _unsent(pg_dsn) == 0)
        sub.wait_for(total, timeout_s=WAIT_S)
        assert serve.proc.stop() == 0, serve.proc.tail()
    assert sub.ids == want  # nothing lost
    repeats = len(sub.messages) - len(sub.ids)
    print(f"relay kill: {left} of {total} unsent at the kill, {repeats} published twice")
    assert '"relay_exited"' in serve.proc.stderr_text()


def test_relay_survives_the_broker_going_away_and_coming_back(pg_dsn, tmp_path):
    prefix = f"relaybroker-{uuid.uuid4().hex[:8]}/"
    port = realparts.free_port()
    with contextlib.ExitStack() as stack:
        broker = realparts.private_mosquitto(port, UNLIMITED_QUEUE)
        addr = broker.__enter__()
        try:
            serve = _Serve(stack, tmp_path, pg_dsn, addr, prefix)
            relay = serve.relay_pid
            with Subscriber(*addr, prefix) as sub:
                first = serve.append(10**9, 500)
                sub.wait_for(500)
            assert sub.ids == first
        finally:
            broker.__exit__(None, None, None)
        # broker gone: events wait in the outbox
        second = serve.append(2 * 10**9, 500)
        assert _unsent(pg_dsn) > 0
        with psycopg.connect(pg_dsn) as conn:
            (gone_at,) = conn.execute("select now()").fetchone()
        with realparts.private_mosquitto(port, UNLIMITED_QUEUE), \
                Subscriber(*addr, prefix) as sub:
            _until(lambda: _unsent(pg_dsn) == 0)  # acknowledged by the new broker
            third = serve.append(3 * 10**9, 500)  # and it keeps publishing live
            _until(lambda: third <= sub.ids)
            with psycopg.connect(pg_dsn) as conn:
                (earliest,) = conn.execute(
                    "select min(o.sent_at) from outbox o join events e on e.seq ="
                    " o.event_seq where e.id = any(%s)",
                    ([uuid.UUID(s) for s in second],)).fetchone()
            assert earliest > gone_at  # marked sent only after the new broker's PUBACK
            assert serve.relay_pid == relay and _alive(relay)  # reconnected, not restarted
            assert serve.proc.stop() == 0, serve.proc.tail()


def test_payswitch_relay_alone_publishes_its_backlog_before_it_exits(pg_dsn, mqtt_broker,
                                                                      tmp_path):
    """`payswitch relay`: SIGTERM as soon as it is ready, with 20,000 events unsent:
    it publishes them all (the drain), then exits 0. A relay that stopped at once
    would leave most of them in the outbox."""
    prefix = f"relayalone-{uuid.uuid4().hex[:8]}/"
    config = tmp_path / "switch.toml"
    # the drain's bound well above what 20,000 events take on a loaded machine (its
    # 5 s default ran out under the parallel suite): the test is that it drains at all
    text = demo_config(realparts.free_port(), realparts.free_port(), ledger=True,
                       ledger_relay=(*mqtt_broker, prefix))
    assert "drain_timeout_ms = 5000" in text
    config.write_text(text.replace("drain_timeout_ms = 5000",
                                   f"drain_timeout_ms = {int(WAIT_S * 1000 / 2)}"))
    mac_key = secrets.token_hex(32)
    with Ledger(pg_dsn, migrate=True, mac=hmac_sha256(bytes.fromhex(mac_key))) as led:
        for k in range(0, 20_000, 2000):
            led.append_events([Event(10**9 + i, "approved", {"n": i}, payment_id=10**9 + i)
                               for i in range(k, k + 2000)])
    with Subscriber(*mqtt_broker, prefix) as sub:
        relay = Proc("relay", payswitch_argv("relay", "--config", str(config)),
                     str(tmp_path), {**os.environ, "PAYSWITCH_PG_DSN": pg_dsn})
        try:
            relay.wait_for_line("payswitch-relay ready")
            relay.popen.send_signal(signal.SIGTERM)
            assert relay.popen.wait(WAIT_S) == 0, relay.tail()
        finally:
            relay.stop()
        assert _unsent(pg_dsn) == 0
        sub.wait_for(20_000)
    assert '"relay_done"' in relay.stderr_text()
