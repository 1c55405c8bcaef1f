"""End-to-end benchmark: terminals -> switch -> network simulators, all processes.

One ``payswitch serve`` process, the Visa and Mastercard simulators in their own
processes, a closed-loop load of approving cards from this process. Reported:
authorizations/s, p50/p99 latency, and the switch's CPU time per authorization (user
+ system from /proc/<pid>/stat, over the load window only). The baseline, in the
same run, is a plain trio relay (``benchmarks.relay``) forwarding the same terminal
frames to an iso87ascii simulator without decoding them: the ratio is what decoding,
routing, the database and re-encoding cost on top of moving the bytes.

    python -m benchmarks.run e2e [--json]

Knobs (environment): PAYSWITCH_BENCH_SECONDS (default 10), PAYSWITCH_BENCH_TERMINALS
(default 8), PAYSWITCH_BENCH_MODE: ``full`` (default: HSM, link MACs, ledger, journal;
``benchmarks.e2e_full``), ``core`` (this module's switch core, no HSM or ledger) or
``both``; PAYSWITCH_BENCH_WORKERS: worker counts of the full mode, one run each
(default ``1``; ``1,2`` for one and two worker processes). The core mode also measures
``serve --workers 2`` (``worker_scaling``).
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import os
import resource
import sys
import tempfile

import trio

from payswitch.lab.demo import Proc, running_topology, start_simulator
from payswitch.simulators.load import LoadConfig, run_load

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of stat(5)


def tree_cpu_seconds(pid: int) -> float:
    """cpu_seconds of a process and of its children (`serve --workers N`: the workers)."""
    total = cpu_seconds(pid)
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            total += sum(cpu_seconds(int(c)) for c in f.read().split())
    return total


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat: is the machine the limit?"""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _measure(host: str, port: int, pid: int, seconds: float, terminals: int) -> dict:
    # Warm-up: connections, sign-on, first database round trips, imports.
    trio.run(run_load, LoadConfig(host, port, profile="pos", terminals=terminals,
                                  duration_s=1.0, cards="approve", progress=False,
                                  first_terminal=1, timeout_s=10))
    before, gen_before, busy_before = tree_cpu_seconds(pid), _own_cpu(), machine_busy()
    report = trio.run(run_load, LoadConfig(host, port, profile="pos", terminals=terminals,
                                           duration_s=seconds, cards="approve",
                                           progress=False, timeout_s=10))
    cpu = tree_cpu_seconds(pid) - before
    gen = _own_cpu() - gen_before
    busy = [b - a for a, b in zip(busy_before, machine_busy(), strict=True)]
    answered = report["approved"] + report["declined"] + report["timeouts"]
    return {
        "authorizations": answered,
        "auth_per_s": report["tps"],
        "p50_ms": report["p50_ms"],
        "p99_ms": report["p99_ms"],
        "errors": report["errors"],
        "cpu_us_per_auth": round(cpu * 1e6 / answered, 1) if answered else None,
        # the load generator (this process) and the whole machine over the same window
        "loadgen_cpu_us_per_auth": round(gen * 1e6 / answered, 1) if answered else None,
        "machine_cpu_busy": round(busy[0] / busy[1], 3) if busy[1] else None,
    }


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_scaling(seconds: float, terminals: int, one: dict,
                   counts: tuple[int, ...] = (2,), **topology: object) -> dict:
    """The switch again as `serve --workers N` for each N in ``counts`` (``one``: the
    figures already measured with one process, same topology). CPU is summed over the
    workers; ``speedup`` is auth/s over one worker's."""
    figures = {"1": one}
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="payswitch-bench-") as log_dir, \
                running_topology(log_dir, terminals=max(terminals, 16), workers=n,
                                 **topology) as topo:  # type: ignore[arg-type]
            figures[str(n)] = _measure(topo.host, topo.port, topo.switch.pid, seconds,
                                       terminals)
        if one["auth_per_s"]:
            figures[str(n)]["speedup"] = round(figures[str(n)]["auth_per_s"]
                                               / one["auth_per_s"], 2)
    return figures


def run(seconds: float, terminals: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="payswitch-bench-") as log_dir:
        with running_topology(log_dir, terminals=max(terminals, 16)) as topo:
            switch = _measure(topo.host, topo.port, topo.switch.pid, seconds, terminals)
        with contextlib.ExitStack() as stack:
            _, sim_port = start_simulator(stack, "iso87ascii", log_dir)
            relay = Proc("relay", [sys.executable, "-m", "benchmarks.relay", "--target",
                                   f"127.0.0.1:{sim_port}"], log_dir)
            stack.callback(relay.stop)
            port = int(relay.wait_for_line("relay ready").rsplit("port=", 1)[1])
            baseline = _measure("127.0.0.1", port, relay.pid, seconds, terminals)
    ratio = {
        "throughput": round(baseline["auth_per_s"] / switch["auth_per_s"], 2)
        if switch["auth_per_s"] else None,
        "cpu": round(switch["cpu_us_per_auth"] / baseline["cpu_us_per_auth"], 2)
        if switch["cpu_us_per_auth"] and baseline["cpu_us_per_auth"] else None,
    }
    return {"benchmark": "e2e", "seconds": seconds, "terminals": terminals,
            "switch": switch, "relay_baseline": baseline,
            "switch_by_workers": worker_scaling(seconds, terminals, switch),
            "relay_over_switch_throughput": ratio["throughput"],
            "switch_over_relay_cpu_per_auth": ratio["cpu"]}


def main(json: bool = False) -> None:
    from benchmarks import e2e_full

    seconds = float(os.environ.get("PAYSWITCH_BENCH_SECONDS", "10"))
    terminals = int(os.environ.get("PAYSWITCH_BENCH_TERMINALS", "8"))
    mode = os.environ.get("PAYSWITCH_BENCH_MODE", "full")
    if mode in ("full", "both"):
        for workers in (int(w) for w in os.environ.get("PAYSWITCH_BENCH_WORKERS",
                                                        "1").split(",")):
            full = e2e_full.run(seconds, terminals, workers)
            print(jsonlib.dumps(full) if json else e2e_full.format_result(full),
                  flush=True)
    if mode in ("core", "both"):
        _main_core(seconds, terminals, json)


def _main_core(seconds: float, terminals: int, json: bool) -> None:
    result = run(seconds, terminals)
    if json:
        print(jsonlib.dumps(result))
        return
    s, b = result["switch"], result["relay_baseline"]
    print(f"e2e: {terminals} terminals closed loop, {seconds:.0f} s each")
    for name, d in (("payswitch", s), ("relay baseline", b)):
        print(f"  {name:<15} {d['auth_per_s']:>8} auth/s  p50 {d['p50_ms']:>7} ms  "
              f"p99 {d['p99_ms']:>7} ms  CPU {d['cpu_us_per_auth']} us/auth  "
              f"errors {d['errors']}")
    print(f"  relay/switch throughput x{result['relay_over_switch_throughput']}, "
          f"switch/relay CPU per auth x{result['switch_over_relay_cpu_per_auth']}")
    for n, d in result["switch_by_workers"].items():
        print(f"  {n} worker(s)     {d['auth_per_s']:>8} auth/s  p50 {d['p50_ms']:>7} ms  "
              f"p99 {d['p99_ms']:>7} ms  CPU {d['cpu_us_per_auth']} us/auth  load generator "
              f"{d['loadgen_cpu_us_per_auth']} us/auth  machine busy {d['machine_cpu_busy']}"
              f"  x{d.get('speedup', 1.0)}")
