"""`payswitch serve --workers N`: N switch processes on one database.

The parent binds nothing that accepts: it reserves each listener's port (a socket bound
with SO_REUSEPORT that never listens, so port 0 in the config becomes one port for all)
and starts N workers, each a whole switch (``python -m payswitch.switch.workers``).
Every worker binds the listener ports itself with SO_REUSEPORT and the kernel spreads
new connections over the listening sockets; each worker opens its own issuer links
with a disjoint slice of STANs and RRNs; its metrics endpoint is metrics_port + index.
A worker that exits while the parent is not stopping is started again (bounded
backoff); SIGTERM/SIGINT to the parent is passed to every worker, which drains. With
``[ledger] relay = true`` the parent also runs the outbox relay's process
(relayproc.py), stopped once the workers have exited.

See switch/README.md, "Worker processes", for why this shape.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import trio

from payswitch.switch import relayproc
from payswitch.switch.config import Config
from payswitch.switch.logs import log

ENV = "PAYSWITCH_WORKER"  # the parent's WorkerSpec, JSON, in each worker's environment
RESTART_MIN_S = 0.1  # backoff between restarts of a worker that keeps dying
RESTART_MAX_S = 5.0
READY_WAIT_S = 30.0  # bound on waiting for every worker's ready line
STOP_MARGIN_S = 5.0  # beyond drain_timeout_ms before a worker that will not stop is killed
LINE_MAX = 65_536  # a worker's stdout line (the ready line) is at most this long
PARENT_POLL_S = 1.0  # how often a worker checks that its parent still lives


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    count: int
    ports: dict[str, int] = field(default_factory=dict)  # listener -> port, reserved

    @classmethod
    def from_env(cls) -> WorkerSpec | None:
        raw = os.environ.get(ENV)
        if not raw:
            return None
        d = json.loads(raw)
        spec = cls(int(d["index"]), int(d["count"]),
                   {str(k): int(v) for k, v in d["ports"].items()})
        if not 0 <= spec.index < spec.count:
            raise ValueError(f"{ENV}: index {spec.index} of {spec.count}")
        return spec

    def to_env(self) -> str:
        return json.dumps({"index": self.index, "count": self.count, "ports": self.ports})

    def share(self, lo: int, hi: int) -> tuple[int, int]:
        """This worker's slice of lo..hi: disjoint from every other worker's."""
        size = (hi - lo + 1) // self.count
        assert size > 0, "fewer numbers than workers"
        start = lo + self.index * size
        return start, start + size - 1


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple]:
    family, _, _, _, addr = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                               flags=socket.AI_PASSIVE)[0]
    return family, addr


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, never listening, SO_REUSEPORT socket: it fixes the port (0 = any free
    one) that the workers then bind and listen on; it receives no connections."""
    family, addr = _address(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(addr)
    return sock


async def reuseport_listener(host: str, port: int, backlog: int = 1024,
                             ) -> trio.SocketListener:
    family, addr = _address(host, port)
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    await sock.bind(addr)
    sock.listen(backlog)
    return trio.SocketListener(sock)


async def watch_parent(scope: trio.CancelScope) -> None:
    """In a worker: drain as on SIGTERM when the parent is gone (killed), so that no
    orphaned worker keeps serving. (Not PR_SET_PDEATHSIG: it fires when the parent's
    forking *thread* ends, and trio forks from a thread it retires when idle.)"""
    parent = os.getppid()
    with scope:  # cancelled when the worker stops anyway
        while os.getppid() == parent:
            await trio.sleep(PARENT_POLL_S)
        log("worker_parent_gone", logging.ERROR, parent=parent)
        os.kill(os.getpid(), signal.SIGTERM)


class _Worker:
    def __init__(self, spec: WorkerSpec, config_path: str, start_failed: trio.Event,
                 ) -> None:
        self.spec = spec
        self.start_failed = start_failed  # set when a first run ends before being ready
        self.config_path = config_path
        self.proc: trio.Process | None = None
        self.ready_info: dict | None = None
        self.ready = trio.Event()
        self.stopping = False
        self.restarts = 0
        self.exit_code: int | None = None
        self.ran_ready = False  # this run printed its ready line
        self.failed_start = False  # its first run ended before it was ready

    async def run(self) -> None:
        backoff = RESTART_MIN_S
        while True:
            env = {**os.environ, ENV: self.spec.to_env()}
            self.proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "payswitch.switch.workers", "--config",
                 self.config_path], stdout=subprocess.PIPE, env=env)
            self.ran_ready = False
            log("worker_started", index=self.spec.index, pid=self.proc.pid,
                restarts=self.restarts)
            await self._read_stdout()
            rc = await self.proc.wait()
            if self.stopping or not self.ready_seen:
                # never ready (config, database, HSM, port): as one process would, the
                # whole command fails with the worker's exit code
                self.exit_code = rc
                if not self.stopping:
                    self.failed_start = True
                    self.start_failed.set()
                return
            self.restarts += 1
            log("worker_exited", logging.ERROR, index=self.spec.index, pid=self.proc.pid,
                exit_code=rc, restart_in_s=backoff)
            await trio.sleep(backoff)
            # a worker that served before dying comes back at once; one that dies
            # before it is ready (database down, port taken) backs off
            backoff = RESTART_MIN_S if self.ran_ready else min(backoff * 2, RESTART_MAX_S)
            if self.stopping:
                self.exit_code = rc
                return

    @property
    def ready_seen(self) -> bool:
        return self.ready.is_set()

    async def _read_stdout(self) -> None:
        """Until EOF (so the pipe never fills): the ready line is kept, others ignored."""
        assert self.proc is not None and self.proc.stdout is not None
        buf = b""
        async for chunk in self.proc.stdout:
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith("payswitch ready "):
                    self.ran_ready = True
                    if self.ready_info is None:
                        self.ready_info = json.loads(text.removeprefix("payswitch ready "))
                        self.ready.set()
            buf = buf[-LINE_MAX:]

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)


async def supervise(cfg: Config, config_path: str, count: int) -> int:
    """The parent of ``count`` workers: until SIGTERM/SIGINT, then drain them all."""
    reserved = {x.name: reserve_port(x.host, x.port) for x in cfg.listeners}
    ports = {name: s.getsockname()[1] for name, s in reserved.items()}
    failed = trio.Event()
    workers = [_Worker(WorkerSpec(i, count, ports), config_path, failed)
               for i in range(count)]
    # the outbox relay: one process beside the workers (relayproc.py), stopped after them
    relay = relayproc.RelayProcess(config_path, cfg) if relayproc.wanted(cfg) else None
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                for w in workers:
                    nursery.start_soon(w.run)
                if relay is not None:
                    await nursery.start(relay.run)
                with trio.move_on_after(READY_WAIT_S):
                    await _all_ready_or_one_failed(workers, failed)
                if not failed.is_set():
                    print("payswitch ready " + json.dumps(_ready_line(workers, ports)),
                          flush=True)
                    await _first_signal_or(signals, failed, count)
                for w in workers:
                    w.stopping = True
                    w.signal(signal.SIGTERM)
                with trio.move_on_after(cfg.switch.drain_timeout_ms / 1000 + STOP_MARGIN_S):
                    for w in workers:
                        while w.proc is not None and w.proc.returncode is None:
                            await w.proc.wait()
                for w in workers:  # would not stop in time
                    w.signal(signal.SIGKILL)
                if relay is not None:  # the workers are gone: the last events go out
                    with trio.CancelScope(shield=True):
                        await relay.stop()
    finally:
        for s in reserved.values():
            s.close()
    codes = [w.exit_code for w in workers]
    log("workers_stopped", exit_codes=codes, restarts=[w.restarts for w in workers])
    if failed.is_set():  # the first worker that could not start says why (2: config)
        code = next(w.exit_code for w in workers if w.failed_start)
        return code if code and code > 0 else 1
    return 0 if all(c == 0 for c in codes) else 1


async def _all_ready_or_one_failed(workers: list[_Worker], failed: trio.Event) -> None:
    async with trio.open_nursery() as n:
        async def all_ready() -> None:
            for w in workers:
                await w.ready.wait()
            n.cancel_scope.cancel()

        async def one_failed() -> None:
            await failed.wait()
            n.cancel_scope.cancel()
        n.start_soon(all_ready)
        n.start_soon(one_failed)


async def _first_signal_or(signals: Any, failed: trio.Event, count: int) -> None:
    async with trio.open_nursery() as n:
        async def on_signal() -> None:
            async for signum in signals:
                log("signal", signal=signal.Signals(signum).name, workers=count)
                break
            n.cancel_scope.cancel()

        async def one_failed() -> None:  # one not ready within READY_WAIT_S, then dead
            await failed.wait()
            n.cancel_scope.cancel()
        n.start_soon(on_signal)
        n.start_soon(one_failed)


def _ready_line(workers: list[_Worker], ports: dict[str, int]) -> dict:
    first = workers[0].ready_info or {}
    return {"listeners": ports, "metrics_port": first.get("metrics_port", 0),
            "metrics_ports": [(w.ready_info or {}).get("metrics_port", 0) for w in workers],
            "links": first.get("links", {}),
            "workers": [{"index": w.spec.index, "pid": w.proc.pid if w.proc else None,
                         "ready": w.ready_seen} for w in workers]}


def main() -> int:
    """One worker (started by ``supervise``, with its WorkerSpec in the environment)."""
    from payswitch.switch.commands import serve

    p = argparse.ArgumentParser(prog="payswitch-worker")
    p.add_argument("--config", required=True)
    return serve(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
