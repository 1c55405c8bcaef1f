"""The outbox relay in a process of its own, started and supervised by `payswitch serve`.

Why a process: the relay publishes about ten QoS 1 messages per authorization; in the
switch's process it competed for the GIL with the authorizations (a profile of the
demo's `serve` put 20 % of its CPU in it). One relay process per `serve` (the parent of
``--workers N``, or the single switch process): ``RelayProcess`` starts
``python -m payswitch.switch.relayproc --config FILE``, starts it again with a bounded
backoff when it dies (its exit never stops the switch), and stops it after the
workers have drained: SIGTERM makes it publish what is left in the outbox (the last
events of the drain) for up to ``switch.drain_timeout_ms``, then exit; SIGKILL after
``STOP_MARGIN_S`` more. Its session advisory lock (ledger.relay.RELAY_LOCK_KEY) still
makes one relay publish per database when two `serve`s share one.

Its metrics: the outbox backlog (``ledger_outbox_unsent``,
``ledger_outbox_oldest_age_seconds``) is read from PostgreSQL by every switch's
/metrics, as before: the database is where the relay's progress is, whichever process
runs it. ``payswitch relay --config FILE`` runs it alone (same config file).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time

import trio

import payswitch.ledger as L
from payswitch.switch.config import Config, ConfigError, load
from payswitch.switch.logs import log

PARENT_ENV = "PAYSWITCH_RELAY_PARENT"  # the supervising pid: the relay exits when it goes
PARENT_POLL_S = 1.0
RESTART_MIN_S = 0.1  # backoff between restarts of a relay that keeps dying
RESTART_MAX_S = 5.0
STEADY_S = 10.0  # a relay that ran this long before dying is restarted at once
STOP_MARGIN_S = 5.0  # beyond drain_timeout_ms before a relay that will not stop is killed
READY_WAIT_S = 30.0  # bound on waiting for a starting relay's ready line before SIGTERM
READY_LINE = b"payswitch-relay ready"
LINE_MAX = 4096
STOP_POLL_S = 0.05


class RelayProcess:
    """Supervises one relay process from a trio program (`serve`)."""

    def __init__(self, config_path: str, cfg: Config) -> None:
        self.config_path = config_path
        self.drain_s = cfg.switch.drain_timeout_ms / 1000
        self.proc: trio.Process | None = None
        self.stopping = False
        self.restarts = 0
        self.exit_codes: list[int] = []
        self._stopped = trio.Event()
        self._started = False
        self.ready = trio.Event()  # this run's relay printed READY_LINE

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Until stop(): the relay runs, and is started again whenever it exits."""
        backoff = RESTART_MIN_S
        self._started = True
        task_status.started()
        try:
            while not self.stopping:
                started = time.monotonic()
                env = {**os.environ, PARENT_ENV: str(os.getpid())}
                self.ready = trio.Event()
                try:
                    self.proc = await trio.lowlevel.open_process(
                        [sys.executable, "-m", "payswitch.switch.relayproc", "--config",
                         self.config_path], env=env, stdout=subprocess.PIPE)
                except OSError as e:  # cannot fork now: the switch carries on
                    log("relay_start_failed", logging.ERROR, error=f"{type(e).__name__}: {e}")
                    rc = None
                else:
                    log("relay_started", pid=self.proc.pid, restarts=self.restarts)
                    await self._read_stdout(self.proc)
                    rc = await self.proc.wait()
                    self.exit_codes.append(rc)
                if self.stopping:
                    break
                if time.monotonic() - started >= STEADY_S:
                    backoff = RESTART_MIN_S
                self.restarts += 1
                log("relay_exited", logging.ERROR, exit_code=rc, restart_in_s=backoff,
                    note="the switch carries on; events wait in the outbox")
                await trio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_MAX_S)
        finally:
            self._stopped.set()

    async def _read_stdout(self, proc: trio.Process) -> None:
        """Until EOF (the pipe never fills): its ready line says its handlers are set."""
        assert proc.stdout is not None
        buf = b""
        async for chunk in proc.stdout:
            buf = (buf + chunk)[-LINE_MAX:]
            if READY_LINE in buf:
                self.ready.set()

    async def stop(self) -> None:
        """SIGTERM (the relay publishes what is left, up to the drain timeout), then
        SIGKILL if it has not exited ``STOP_MARGIN_S`` later; returns when it is gone
        (also one that run() was starting at that moment)."""
        self.stopping = True
        while self._started and not self._stopped.is_set():
            proc = self.proc
            if proc is not None and proc.returncode is None:
                await self._stop_one(proc)
            with trio.move_on_after(STOP_POLL_S):  # run() ends, or starts one more
                await self._stopped.wait()
        log("relay_stopped", exit_codes=self.exit_codes, restarts=self.restarts)

    async def _stop_one(self, proc: trio.Process) -> None:
        # A relay still starting up gets its SIGTERM once ready (bounded): before its
        # handler is set, SIGTERM would end it without publishing the last events.
        with trio.move_on_after(READY_WAIT_S):
            async with trio.open_nursery() as n:  # ready, or gone
                async def gone() -> None:
                    await proc.wait()
                    n.cancel_scope.cancel()
                n.start_soon(gone)
                await self.ready.wait()
                n.cancel_scope.cancel()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.drain_s + STOP_MARGIN_S):
            await proc.wait()
        if proc.returncode is None:
            log("relay_killed", logging.ERROR, pid=proc.pid,
                note="did not stop in time; unsent events wait in the outbox")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def wanted(cfg: Config) -> bool:
    return cfg.ledger.enabled and cfg.ledger.relay


def make_relay(cfg: Config) -> L.OutboxRelay:
    led = cfg.ledger
    return L.OutboxRelay(cfg.database.resolve_dsn(), L.RelayConfig(
        host=led.mqtt_host, port=led.mqtt_port, topic_prefix=led.topic_prefix,
        batch_max=led.relay_batch_max, inflight_max=led.relay_inflight_max,
        publish_timeout_s=led.relay_publish_timeout_ms / 1000))


def run_relay(config_path: str) -> int:
    """The relay process (or `payswitch relay`): until SIGTERM/SIGINT, then it drains."""
    from payswitch.switch import logs

    try:
        cfg = load(config_path)
        logs.setup(cfg.switch.log_level)
        if not wanted(cfg):
            raise ConfigError("relay: needs [ledger] enabled = true and relay = true")
        relay = make_relay(cfg)
    except ConfigError as e:
        print(f"payswitch relay: {e}", file=sys.stderr)
        return 2
    drain_s = cfg.switch.drain_timeout_ms / 1000
    parent = int(os.environ.get(PARENT_ENV) or 0)
    # No Python signal handler: one runs between two bytecodes of the main thread,
    # which may hold the very lock stop()'s Event needs. The signals are blocked (the
    # relay's thread inherits the mask) and taken here with sigtimedwait. Under serve
    # a Ctrl-C reaches the whole process group: serve drains its switch first, then
    # stops this relay with SIGTERM, so SIGINT is ignored.
    wanted_signals = {signal.SIGTERM} if parent else {signal.SIGTERM, signal.SIGINT}
    if parent:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted_signals)
    thread = relay.start_thread()
    log("relay_ready", pid=os.getpid(), mqtt=f"{cfg.ledger.mqtt_host}:{cfg.ledger.mqtt_port}")
    print(READY_LINE.decode(), flush=True)  # signals taken: RelayProcess may SIGTERM
    while thread.is_alive():
        got = signal.sigtimedwait(wanted_signals, PARENT_POLL_S)
        if got is not None:
            log("signal", signal=signal.Signals(got.si_signo).name, drain_s=drain_s)
            relay.stop(drain_s)
        elif parent and os.getppid() != parent:
            # serve was SIGKILLed: stop without draining, freeing the lock for the
            # next serve's relay
            log("relay_parent_gone", logging.ERROR, parent=parent)
            relay.stop()
    thread.join()
    log("relay_done", published=relay.published)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="payswitch-relay")
    p.add_argument("--config", required=True)
    return run_relay(p.parse_args().config)


if __name__ == "__main__":
    sys.exit(main())
