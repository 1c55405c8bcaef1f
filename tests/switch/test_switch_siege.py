"""Issue 9 acceptance, slow: hostile sockets next to four configured terminals.

Real switch (PostgreSQL journal), fake issuer approving everything, wall clock: these
measure what a terminal sees (approval rate, reconnect time, latency) while idle
sockets, slowloris senders or a junk flood hit the same listener.
"""

from __future__ import annotations

import contextlib
import statistics
import sys

import pytest
import trio
from switchkit import (
    FakeIssuer,
    Terminal,
    config_dict,
    purchase,
    running_switch,
    serving,
    trio_test,
)

pytestmark = pytest.mark.slow

TERMINALS = [f"TERM000{i}" for i in range(1, 5)]
RECONNECT_EVERY = 20  # requests per connection: terminals reconnect all the time


def siege_config(dsn: str, issuer_port: int) -> dict:
    cfg = config_dict(dsn, issuer_port)
    cfg["terminals"] = [{"id": t, "listener": "pos"} for t in TERMINALS]
    cfg["database"]["pool_size"] = 8
    return cfg


class Stats:
    def __init__(self) -> None:
        self.sent = 0
        self.approved = 0
        self.latencies: list[float] = []
        self.reconnects: list[float] = []  # connect + first answer, seconds


async def terminal_loop(port: int, term_id: str, stats: Stats, stop: trio.Event,
                        first_stan: int) -> None:
    stan = first_stan
    while not stop.is_set():
        started = trio.current_time()
        term = Terminal(await connect(port))
        try:
            for i in range(RECONNECT_EVERY):
                if stop.is_set():
                    break
                stan += 1
                req = purchase(stan=f"{stan:06d}").replace(terminal_id=term_id)
                t0 = trio.current_time()
                stats.sent += 1
                resp = await term.request(req, timeout_s=10)
                stats.latencies.append(trio.current_time() - t0)
                if i == 0:
                    stats.reconnects.append(trio.current_time() - started)
                stats.approved += resp.response_code == "00"
        finally:
            await term.aclose()


async def connect(port: int, source: str = "127.0.0.1") -> trio.SocketStream:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def run_terminals(port: int, seconds: float, phase: int) -> list[Stats]:
    stats = [Stats() for _ in TERMINALS]
    stop = trio.Event()
    async with trio.open_nursery() as n:
        for k, term_id in enumerate(TERMINALS):
            n.start_soon(terminal_loop, port, term_id, stats[k], stop,
                         phase * 100_000 + k * 10_000)
        await trio.sleep(seconds)
        stop.set()
    return stats


async def slowloris(port: int, source: str, stop: trio.Event) -> None:
    """One byte a second, forever; reconnects whenever the switch closes it."""
    while not stop.is_set():
        stream = await connect(port, source)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async with stream:
                for byte in b"\x00\x40" + b"0200" * 16:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(1)


FLOODER = """
import socket, sys, time
port, source, seconds, total = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
junk = b"".join(len(b).to_bytes(2, "big") + b
                for b in (b"\\xff" * 60 + bytes([i]) for i in range(100)))
sent, conns, start = 0, 0, time.monotonic()
end = start + seconds
while time.monotonic() < end:
    conns += 1
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
        while time.monotonic() < end:
            # paced: `total` frames spread over `seconds`
            ahead = sent / total * seconds - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
            s.sendall(junk)
            sent += 100
    except OSError:
        pass
    finally:
        s.close()
print(sent, conns)
"""
FLOOD_FRAMES = 200_000  # the outside tester's flood (issue 9, finding 6)


async def junk_flood(port: int, source: str, seconds: float) -> tuple[int, int]:
    """Another process (as an outside attacker is): FLOOD_FRAMES junk frames spread
    over ``seconds``, reconnecting whenever the switch closes it. Returns (frames written into the
    socket, connections made)."""
    proc = await trio.run_process(
        [sys.executable, "-c", FLOODER, str(port), source, str(seconds),
         str(FLOOD_FRAMES)],
        capture_stdout=True)
    sent, conns = proc.stdout.split()
    return int(sent), int(conns)


def summary(stats: list[Stats]) -> tuple[float, float]:
    sent = sum(s.sent for s in stats)
    rate = sum(s.approved for s in stats) / sent
    return rate, statistics.median(x for s in stats for x in s.latencies)


@trio_test
async def test_idle_sockets_and_slowloris_do_not_lock_out_configured_terminals(dsn):
    async with serving(FakeIssuer()) as issuer_port, \
            running_switch(siege_config(dsn, issuer_port)) as sw:
        port = sw.ports["pos"]
        baseline = await run_terminals(port, 3, phase=1)
        base_rate, base_p50 = summary(baseline)

        stop = trio.Event()
        idle: list[trio.SocketStream] = []
        async with trio.open_nursery() as n:
            for i in range(300):
                idle.append(await connect(port, f"127.0.0.{2 + i % 10}"))
            for i in range(5):
                n.start_soon(slowloris, port, f"127.0.1.{i + 1}", stop)
            siege = await run_terminals(port, 8, phase=2)
            stop.set()
            n.cancel_scope.cancel()
        for s in idle:
            with contextlib.suppress(trio.BrokenResourceError):
                await s.aclose()
    rate, p50 = summary(siege)
    worst_reconnect = max(x for s in siege for x in s.reconnects)
    print(f"baseline approvals {base_rate:.3f} p50 {base_p50 * 1000:.1f} ms; "
          f"siege approvals {rate:.3f} p50 {p50 * 1000:.1f} ms, "
          f"worst reconnect {worst_reconnect * 1000:.0f} ms, "
          f"reconnects {sum(len(s.reconnects) for s in siege)}")
    assert base_rate == 1.0
    for s in siege:  # every configured terminal, not just the total
        assert s.sent > 0 and s.approved == s.sent
    assert worst_reconnect < 1.0


@trio_test
async def test_junk_flood_keeps_terminal_latency_within_twice_baseline(dsn):
    async with serving(FakeIssuer()) as issuer_port, \
            running_switch(siege_config(dsn, issuer_port)) as sw:
        port = sw.ports["pos"]
        base_rate, base_p50 = summary(await run_terminals(port, 4, phase=1))
        junk: list[tuple[int, int]] = []

        async def flooder(i: int) -> None:
            junk.append(await junk_flood(port, f"127.0.2.{i + 1}", 7))

        async with trio.open_nursery() as n:
            for i in range(2):
                n.start_soon(flooder, i)
            await trio.sleep(0.5)  # the flood is on
            flood = await run_terminals(port, 6, phase=2)
    rate, p50 = summary(flood)
    print(f"baseline p50 {base_p50 * 1000:.1f} ms; flood p50 {p50 * 1000:.1f} ms; "
          f"junk frames written {sum(j[0] for j in junk)} on "
          f"{sum(j[1] for j in junk)} connections; approvals {rate:.3f}")
    assert rate == 1.0
    assert p50 <= 2 * base_p50
