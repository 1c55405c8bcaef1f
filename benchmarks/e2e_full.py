"""The e2e benchmark's full mode: everything an authorization costs in production.

Topology as in ``payswitch demo``: SoftHSM tokens (switch, issuer, terminal), the switch
with its [hsm] (terminal PIN blocks translated TPK / TDES DUKPT -> link ZPK, the Visa
link MACed both ways, PAN token + AES-GCM at rest) and its [ledger] (pending hold plus
MAC-chained events per approval), the journal; Visa and Mastercard simulators verifying
PIN and CVV with the issuer token.

The load is a lean closed loop: every request frame (ATM withdrawal, online PIN, real
PIN block and CVV from the terminal token) is built and encoded *before* the measured
window, so during it a terminal only writes a frame, reads one, and decodes the answer
for its DE39. The client's own CPU is read over the window (``client_cpu_share``: its
CPU seconds per wall second; 1.0 would be a full core, the bottleneck on 2 cores).

The baseline, in the same run: the trio relay of ``benchmarks.relay`` forwarding the
same frames to an iso87ascii simulator, driven by the same client.

CPU per authorization is user + system of the switch process and its children (the
worker processes of ``serve --workers N``), from /proc, over the window only.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import trio

from payswitch.codecs.errors import CodecError, FramingError
from payswitch.codecs.framing import FrameReader, encode_frame
from payswitch.codecs.iso8583 import get
from payswitch.hsm import Hsm, devkeys
from payswitch.lab.demo import DUKPT_EVERY, Proc, running_topology, start_simulator
from payswitch.simulators.cards import BY_NAME
from payswitch.simulators.network import SocketConn
from payswitch.simulators.terminal import CardCrypto, Terminal

CLK_TCK = os.sysconf("SC_CLK_TCK")
DIALECT = get("iso87ascii")
# Off-us approving cards (the demo's on-us card, mastercard_approve_2, is left out:
# it never reaches an issuer link).
CARDS = ("visa_approve", "visa_approve_2", "mastercard_approve", "mastercard_2series_approve")
APPROVED = {"00", "10", "11", "08"}
MAX_RATE = 1500  # frames built per second of window: the client never runs dry below it
WARM_FRAMES = 50  # per terminal, before the window
TIMEOUT_S = 10.0  # one request's bound; a silent host fails the terminal, not the run


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live children (worker processes), from /proc."""
    total = 0.0
    for path in [f"/proc/{pid}/stat", *_children_stats(pid)]:
        with contextlib.suppress(OSError), open(path) as f:
            total += _stat_cpu_seconds(f.read())
    return total


def _stat_cpu_seconds(stat: str) -> float:
    """utime + stime of one /proc/PID/stat line (stat(5) fields 14, 15)."""
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> dict[str, float]:
    """CPU seconds so far: the whole machine (busy and all, every core, /proc/stat)
    and every PostgreSQL process (by name, all databases)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    postgres = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            stat = f.read()  # a process gone meanwhile: skipped, not its predecessor's
            if "(postgres)" in stat:
                postgres += _stat_cpu_seconds(stat)
    return {"all": sum(ticks) / CLK_TCK, "busy": (sum(ticks) - idle) / CLK_TCK,
            "postgres": postgres}


def _children_stats(pid: int) -> list[str]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
            out += [f"/proc/{child}/stat" for child in f.read().split()]
    return out


def build_frames(hsm: Hsm, terminals: int, per_terminal: int, first: int = 1,
                 ) -> list[list[bytes]]:
    """Per terminal, ``per_terminal`` framed (len2) withdrawals with a PIN block made in
    the terminal token (TPK, or TDES DUKPT every DUKPT_EVERY-th terminal, as the demo
    config expects), each with its own STAN."""
    cards = [BY_NAME[n] for n in CARDS]
    out = []
    for i in range(terminals):
        n = first + i
        crypto = CardCrypto(hsm, dukpt=n % DUKPT_EVERY == 0, device_id=n)
        term = Terminal(f"DEMO{n:04d}", seed=n * 7919 + int(time.time()), crypto=crypto)
        out.append([encode_frame("len2", DIALECT.encode(
            term.withdrawal(cards[k % len(cards)], 2000 + 100 * (k % 50))))
            for k in range(per_terminal)])
    return out


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    exhausted: int = 0  # terminals that ran out of pre-built frames (MAX_RATE too low)


async def _terminal(host: str, port: int, frames: list[bytes], deadline: float,
                    tally: _Tally) -> None:
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        tally.errors += 1
        return
    conn = SocketConn(stream)  # the client's CPU per request is the switch's loss
    reader = FrameReader("len2", 8192)
    pending: list = []
    with conn.sock:
        for frame in frames:
            if time.monotonic() >= deadline:
                return
            start = time.perf_counter()
            try:
                with trio.fail_after(TIMEOUT_S):
                    await conn.send_all(frame)
                    while not pending:
                        pending += reader.feed(await _receive(conn))
            except (trio.TooSlowError, trio.BrokenResourceError, FramingError, OSError):
                tally.errors += 1
                return
            tally.latencies.append(time.perf_counter() - start)
            try:
                code = DIALECT.decode(pending.pop(0).payload).response_code or "?"
            except CodecError:
                code = "decode"
            tally.codes[code] = tally.codes.get(code, 0) + 1
        tally.exhausted += 1


async def _receive(conn: SocketConn) -> bytes:
    """Bytes the host sent; EOF is an error."""
    data = await conn.receive_some()
    if not data:
        raise trio.BrokenResourceError
    return data


async def closed_loop(host: str, port: int, frames: list[list[bytes]],
                      seconds: float) -> dict:
    """One connection per terminal, one request in flight on each; returns the figures
    and the client's own CPU over the window."""
    tally = _Tally()
    deadline = time.monotonic() + seconds
    cpu0, t0 = time.process_time(), time.monotonic()
    async with trio.open_nursery() as nursery:
        for per_terminal in frames:
            nursery.start_soon(_terminal, host, port, per_terminal, deadline, tally)
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    lat = sorted(tally.latencies)
    n = len(lat)

    def pct(p: float) -> float:
        return round(lat[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))] * 1000, 2) if n else 0

    answered = sum(tally.codes.values())
    errors = tally.errors + sum(c for k, c in tally.codes.items()
                                if k in ("30", "96", "decode"))
    return {"authorizations": answered, "auth_per_s": round(answered / wall, 1),
            "approved": sum(c for k, c in tally.codes.items() if k in APPROVED),
            "by_code": dict(sorted(tally.codes.items())),
            "p50_ms": pct(50), "p99_ms": pct(99), "errors": errors,
            "exhausted_terminals": tally.exhausted, "wall_s": round(wall, 2),
            "client_cpu_share": round(cpu / wall, 3)}


def measure(host: str, port: int, pid: int, frames: list[list[bytes]],
            seconds: float, peers: tuple[int, ...] = ()) -> dict:
    """The closed loop against ``host:port`` over ``seconds``, with the CPU of ``pid``
    (and its children) per answered request, and where the rest of the machine's CPU
    went (``machine_cores``: cores busy on average; ``peers``: the simulators)."""
    before, peers0, m0 = tree_cpu_seconds(pid), sum(map(tree_cpu_seconds, peers)), \
        machine_cpu()
    figures = trio.run(closed_loop, host, port, frames, seconds)
    cpu = tree_cpu_seconds(pid) - before
    peer_cpu = sum(map(tree_cpu_seconds, peers)) - peers0
    m1 = machine_cpu()
    n, wall = figures["authorizations"], figures["wall_s"]
    figures["cpu_us_per_auth"] = round(cpu * 1e6 / n, 1) if n else None
    figures["cpu_share"] = round(cpu / wall, 3)
    cores = (m1["all"] - m0["all"]) / wall
    figures["machine_cores"] = {
        "cores": round(cores, 2), "busy": round((m1["busy"] - m0["busy"]) / wall, 2),
        "switch": round(cpu / wall, 2), "postgres": round((m1["postgres"] - m0["postgres"])
                                                          / wall, 2),
        "simulators": round(peer_cpu / wall, 2), "client": figures["client_cpu_share"]}
    return figures


@contextlib.contextmanager
def full_topology(log_dir: str, seconds: float, terminals: int, workers: int = 1,
                  ) -> Iterator[tuple[Any, list[list[bytes]], list[list[bytes]], float]]:
    """Tokens, frames (warm-up and measured), then the demo's topology with HSM and
    ledger, warmed up. Yields (topology, frames, warm-up frames, build seconds).
    ``workers``: processes of ``payswitch serve`` (passed on when it is not 1)."""
    per_terminal = math.ceil(MAX_RATE * seconds / terminals)
    tokens = devkeys.make_dev_tokens(os.path.join(log_dir, "softhsm"))
    topo_kwargs = {"workers": workers} if workers != 1 else {}
    with Hsm(tokens["terminal"]) as terminal_hsm:
        t0 = time.monotonic()
        # One STAN sequence per terminal: warm-up frames are never duplicates of others.
        built = build_frames(terminal_hsm, terminals, WARM_FRAMES + per_terminal)
        build_s = time.monotonic() - t0
    warm = [f[:WARM_FRAMES] for f in built]
    frames = [f[WARM_FRAMES:] for f in built]
    with running_topology(log_dir, terminals=max(terminals, 16), hsm=tokens,
                          ledger=True, **topo_kwargs) as topo:
        trio.run(closed_loop, topo.host, topo.port, warm, 2.0)  # sign-on, first trips
        yield topo, frames, warm, build_s


def run(seconds: float, terminals: int, workers: int = 1) -> dict:
    """Full mode, then the relay baseline on the same frames."""
    with tempfile.TemporaryDirectory(prefix="payswitch-bench-full-") as log_dir:
        with full_topology(log_dir, seconds, terminals, workers) as (topo, frames, warm,
                                                                     build_s):
            switch = measure(topo.host, topo.port, topo.switch.pid, frames, seconds,
                             tuple(p.pid for p in topo.simulators.values()))
        with contextlib.ExitStack() as stack:
            _, sim_port = start_simulator(stack, "iso87ascii", log_dir)
            relay = Proc("relay", [sys.executable, "-m", "benchmarks.relay", "--target",
                                   f"127.0.0.1:{sim_port}"], log_dir)
            stack.callback(relay.stop)
            port = int(relay.wait_for_line("relay ready").rsplit("port=", 1)[1])
            trio.run(closed_loop, "127.0.0.1", port, warm, 1.0)
            baseline = measure("127.0.0.1", port, relay.pid, frames, seconds)
    cpu_ratio = (round(switch["cpu_us_per_auth"] / baseline["cpu_us_per_auth"], 2)
                 if switch["cpu_us_per_auth"] and baseline["cpu_us_per_auth"] else None)
    return {"benchmark": "e2e", "mode": "full", "seconds": seconds, "terminals": terminals,
            "workers": workers, "frames_built": sum(map(len, frames)),
            "frames_build_s": round(build_s, 2), "load_average": os.getloadavg()[0],
            "switch": switch, "relay_baseline": baseline,
            "switch_over_relay_cpu_per_auth": cpu_ratio}


def format_result(r: dict) -> str:
    lines = [f"e2e full (HSM PIN translation + link MAC, ledger hold + events, journal): "
             f"{r['terminals']} terminals closed loop, {r['seconds']:.0f} s, "
             f"{r['workers']} worker(s), load average {r['load_average']:.1f}"]
    for name, d in (("payswitch", r["switch"]), ("relay baseline", r["relay_baseline"])):
        lines.append(f"  {name:<15} {d['auth_per_s']:>8} auth/s  p50 {d['p50_ms']:>7} ms  "
                     f"p99 {d['p99_ms']:>7} ms  CPU {d['cpu_us_per_auth']} us/auth  "
                     f"client CPU {d['client_cpu_share']:.0%} of a core  "
                     f"errors {d['errors']}")
    lines.append(f"  switch/relay CPU per auth x{r['switch_over_relay_cpu_per_auth']}")
    m = r["switch"]["machine_cores"]
    lines.append(f"  machine during the switch run: {m['busy']} of {m['cores']} cores busy: "
                 f"switch {m['switch']}, PostgreSQL {m['postgres']}, simulators "
                 f"{m['simulators']}, client {m['client']}")
    return "\n".join(lines)
