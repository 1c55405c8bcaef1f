"""`payswitch serve --config FILE`: run the switch until SIGTERM/SIGINT, then drain.

Once listening, and once every issuer link has signed on (or after at most
``READY_LINK_WAIT_S``, so that a peer that is down does not keep the switch from
starting), it prints one line on stdout::

    payswitch ready {"listeners": {"pos": 40123}, "metrics_port": 0, "links": {"visa": "signed_on"}}

(ports as bound, so that port 0 in the config can be used by tests and scripts; each
link's state, so that a script can tell a ready switch from one whose issuers are still
down: a request sent before its link is signed on gets 91).
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys

import trio

from payswitch.hsm.errors import HsmError
from payswitch.switch import logs
from payswitch.switch.config import ConfigError, load
from payswitch.switch.errors import StoreError

READY_LINK_WAIT_S = 10.0  # bound on waiting for the links' first sign-on before "ready"
MAX_WORKERS = 64
# Cyclic GC once started: a young collection every GC_GEN0 container allocations, not
# CPython's 700 (an authorization allocates more than that, so it paid about one
# collection, each walking the objects of every request in flight).
GC_GEN0 = 50_000


def tune_gc() -> None:
    """After start-up: what was made so far (modules, config, keys, pools) lives as long
    as the process, so it leaves the collector's generations (``gc.freeze``) and is
    never walked again; young collections come less often. Cycles are still collected
    (trio's tracebacks, outcomes), only in bigger, rarer rounds."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0, gen1, gen2)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the payment switch")
    p.add_argument("--config", required=True, help="TOML configuration file")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="N switch processes on one database (SO_REUSEPORT listeners, "
                        "a link per worker; see switch/README.md)")
    p.set_defaults(func=serve)
    r = sub.add_parser("relay", help="run the outbox relay (ledger events to MQTT) alone,"
                       " as `serve` runs it in a process of its own")
    r.add_argument("--config", required=True, help="TOML configuration file (serve's)")
    r.set_defaults(func=relay)


def relay(args: argparse.Namespace) -> int:
    from payswitch.switch.relayproc import run_relay

    return run_relay(args.config)


def serve(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
        logs.setup(cfg.switch.log_level)
    except ConfigError as e:
        print(f"payswitch serve: {e}", file=sys.stderr)
        return 2
    from payswitch.switch import relayproc, workers
    from payswitch.switch.server import Switch

    count = getattr(args, "workers", 1)
    if count < 1 or count > MAX_WORKERS:
        print(f"payswitch serve: --workers must be 1..{MAX_WORKERS}", file=sys.stderr)
        return 2
    if count > 1:
        try:
            return trio.run(workers.supervise, cfg, args.config, count)
        except OSError as e:  # a listener port in use
            print(f"payswitch serve: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    worker = workers.WorkerSpec.from_env()  # set when this process is one of N
    # one relay process per serve: here when this is the only switch process, in the
    # parent (workers.supervise) with --workers N; never a thread in a switch
    relay = (relayproc.RelayProcess(args.config, cfg)
             if worker is None and relayproc.wanted(cfg) else None)

    async def main() -> None:
        async with trio.open_nursery() as outer:
            try:
                await switch(outer)
            finally:  # after the switch's drain: the relay publishes its last events
                if relay is not None:
                    with trio.CancelScope(shield=True):
                        await relay.stop()

    async def switch(outer: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT,
                                       signal.SIGUSR1) as signals:
            sw = Switch(cfg, worker=worker, relay_thread=False)
            async with trio.open_nursery() as nursery:
                await nursery.start(sw.run)
                if relay is not None:
                    await outer.start(relay.run)
                watching = trio.CancelScope()
                if worker is not None:
                    nursery.start_soon(workers.watch_parent, watching)
                with trio.move_on_after(READY_LINK_WAIT_S):
                    for link in sw.links.values():
                        await link.signed_on.wait()
                ready = {"listeners": sw.ports, "metrics_port": sw.metrics_port,
                         "links": {name: link.state for name, link in sw.links.items()}}
                tune_gc()
                print("payswitch ready " + json.dumps(ready), flush=True)
                async for signum in signals:
                    logs.log("signal", signal=signal.Signals(signum).name)
                    if signum == signal.SIGUSR1:  # new link keys (switch/linkkeys.py)
                        from payswitch.switch.linkkeys import rotate_all
                        nursery.start_soon(rotate_all, sw.links)
                        continue
                    sw.stop()
                    watching.cancel()
                    break

    try:
        trio.run(main)
    except (ConfigError, StoreError, HsmError, OSError, BaseExceptionGroup) as e:
        err = e
        while isinstance(err, BaseExceptionGroup) and len(err.exceptions) == 1:
            err = err.exceptions[0]
        if not isinstance(err, (ConfigError, StoreError, HsmError, OSError)):
            raise
        # e.g. no DSN, database down, HSM token or PIN wrong, listener port in use
        print(f"payswitch serve: {type(err).__name__}: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    return 0
