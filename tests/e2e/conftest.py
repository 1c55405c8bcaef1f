"""The real topology for end-to-end tests: PostgreSQL, the switch as a `payswitch serve`
process, and the Visa and Mastercard simulators in this process (in a thread with its
own trio loop) so that tests can read the bytes they received."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass

import pytest
import trio

from payswitch.lab import realparts
from payswitch.lab.demo import demo_config, start_switch
from payswitch.simulators.network import NetworkSimulator

# The switch's wait for an issuer's answer: wide, so that a loaded CI box (2 cores,
# the whole suite at once) does not turn a slow approval into a 91. The "no answer"
# scenarios therefore take this long.
ISSUER_TIMEOUT_MS = 5000


class SimThread:
    """A NetworkSimulator served by its own trio loop in a daemon thread."""

    def __init__(self, sim: NetworkSimulator) -> None:
        self.sim = sim
        self._ready = threading.Event()
        self._token = None
        self._scope = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            await nursery.start(self.sim.serve)
            self._ready.set()

    def start(self) -> int:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("simulator did not start")
        return self.sim.port

    def call(self, async_fn, *args):
        """Run ``async_fn(*args)`` in the simulator's loop (e.g. ``sim.drop_links``)."""
        return trio.from_thread.run(async_fn, *args, trio_token=self._token)

    def stop(self) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)


@dataclass
class Topology:
    host: str
    port: int
    visa: NetworkSimulator
    mastercard: NetworkSimulator
    switch: object
    threads: dict


def start_sims(stack: contextlib.ExitStack) -> dict[str, SimThread]:
    threads = {}
    for network in ("visa", "mastercard"):
        t = SimThread(NetworkSimulator(network, seed=1))
        t.start()
        stack.callback(t.stop)
        threads[network] = t
    return threads


@pytest.fixture(scope="module")
def topology(pg_admin_dsn, tmp_path_factory):
    log_dir = str(tmp_path_factory.mktemp("e2e"))
    with realparts.scratch_database(pg_admin_dsn) as dsn, contextlib.ExitStack() as stack:
        threads = start_sims(stack)
        sims = {name: t.sim for name, t in threads.items()}
        config = os.path.join(log_dir, "payswitch.toml")
        with open(config, "w") as f:
            f.write(demo_config(sims["visa"].port, sims["mastercard"].port,
                                issuer_timeout_ms=ISSUER_TIMEOUT_MS))
        switch, listeners = start_switch(stack, config, log_dir, dsn)
        host, port = listeners["pos"]
        yield Topology(host, port, sims["visa"], sims["mastercard"], switch, threads)
