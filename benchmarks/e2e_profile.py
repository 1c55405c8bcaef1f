"""Where the switch's CPU goes, per step, under the e2e benchmark's load.

The topology and load of ``benchmarks.e2e`` (switch core, Visa and Mastercard
simulators, closed-loop approving terminals). During the measured window py-spy samples
``payswitch serve`` with ``--gil`` (only the thread holding the GIL, so waits do not
count); each sample goes to the first step of the tables below that matches its stack;
the shares are scaled to the switch's CPU per authorization read from /proc over the
same window, event-loop thread and database threads apart. Prints a Markdown table
(the one in ARCHITECTURE.md) or, with --json, the figures.

    .venv/bin/pip install py-spy          # a measuring tool, not a project dependency
    python -m benchmarks.run e2e_profile [--json]

Knobs (environment): PAYSWITCH_BENCH_SECONDS (default 30), PAYSWITCH_BENCH_TERMINALS
(default 8), PAYSWITCH_PROFILE_RATE (samples/s, default 250).
"""

from __future__ import annotations

import collections
import glob
import json as jsonlib
import os
import shutil
import subprocess
import sys
import tempfile

import trio

from payswitch.lab.demo import running_topology
from payswitch.simulators.load import LoadConfig, run_load

CLK_TCK = os.sysconf("SC_CLK_TCK")
# (step, frames of which any marks it); first match wins, the last one takes the rest.
LOOP_STEPS = (
    ("thread hop: each DB transaction handed to a worker thread and back (x3)",
     ("to_thread_run_sync", "start_thread_soon", "WakeupSocketpair")),
    ("JSON log line per request", ("(switch/logs.py",)),
    ("answer: encode, frame, send to the terminal", ("_Connection._send",)),
    ("issuer: encode, frame, send", ("IssuerLink._send",)),
    ("issuer: read, decode the response, MUX match", ("IssuerLink._reader",)),
    ("request: read, frame, decode", ("_Connection._read_loop", "dialect.py")),
    ("participants: fingerprint, route, outbound message, MUX register",
     ("(switch/participants/", "(switch/pans.py", "(switch/messages.py", "(switch/mux.py",
      "(routing/")),
    ("handle + record: manager, context, metrics, response, journal rows",
     ("Switch.handle", "(switch/txn.py", "(switch/record.py", "_Connection._on_frame")),
    ("trio: scheduler, epoll, socket wrappers", ("",)),
)
DB_STEPS = (
    ("BEGIN / COMMIT round trips (x3)",
     ("Connection.transaction", "_commit_gen", "_enter_gen", "_exit_gen")),
    ("journal response + events + SAF rows (complete)", ("Store.complete",)),
    ("duplicate claim (claim)", ("Store.claim",)),
    ("journal issuer_request (append)", ("Store.append",)),
    ("worker thread: wake-up, job hand-off, GIL", ("",)),
)


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) per thread of a process, from /proc."""
    cpu = {}
    for path in glob.glob(f"/proc/{pid}/task/*/stat"):
        with open(path) as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        cpu[int(path.split("/")[-2])] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return cpu


def attribute(raw_path: str) -> tuple[collections.Counter, collections.Counter]:
    loop, db = collections.Counter(), collections.Counter()
    with open(raw_path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not n.isdigit():  # a stack py-spy could not finish reading
                continue
            steps, into = (LOOP_STEPS, loop) if "MainThread" in stack else (DB_STEPS, db)
            for step, marks in steps:
                if any(m in stack for m in marks):
                    into[step] += int(n)
                    break
    return loop, db


def py_spy() -> str | None:
    found = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    return found if os.path.exists(found) else None


def run(seconds: float, terminals: int, rate: int, log_dir: str, spy_bin: str) -> dict:
    raw = os.path.join(log_dir, "spy.txt")
    cfg = dict(profile="pos", terminals=terminals, cards="approve", progress=False,
               timeout_s=10)
    with running_topology(log_dir, terminals=max(terminals, 16)) as topo:
        trio.run(run_load, LoadConfig(topo.host, topo.port, duration_s=1.0,
                                      first_terminal=1, **cfg))  # warm-up
        pid = topo.switch.pid
        spy = subprocess.Popen([spy_bin, "record", "--pid", str(pid), "--duration",
                                str(int(seconds)), "--rate", str(rate), "--format", "raw",
                                "--threads", "--nonblocking", "--gil", "-o", raw],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = thread_cpu(pid)
        report = trio.run(run_load, LoadConfig(topo.host, topo.port, duration_s=seconds,
                                               **cfg))
        after = thread_cpu(pid)
        spy.wait(seconds + 60)
    n = report["approved"] + report["declined"] + report["timeouts"]
    loop_s = after.get(pid, 0) - before.get(pid, 0)
    db_s = sum(after.values()) - sum(before.values()) - loop_s
    loop, db = attribute(raw)
    loop_us, db_us = loop_s * 1e6 / n, db_s * 1e6 / n

    def share(counts: collections.Counter, steps: tuple, total_us: float) -> dict:
        total = sum(counts.values()) or 1
        return {step: round(total_us * counts[step] / total) for step, _ in steps
                if counts[step]}

    return {"benchmark": "e2e_profile", "seconds": seconds, "terminals": terminals,
            "authorizations": n, "auth_per_s": report["tps"], "p50_ms": report["p50_ms"],
            "p99_ms": report["p99_ms"], "errors": report["errors"],
            "cpu_us_per_auth": round(loop_us + db_us), "loop_us_per_auth": round(loop_us),
            "db_threads_us_per_auth": round(db_us),
            "samples": {"loop": sum(loop.values()), "db": sum(db.values())},
            "loop_steps_us": share(loop, LOOP_STEPS, loop_us),
            "db_steps_us": share(db, DB_STEPS, db_us)}


def table(r: dict) -> str:
    rows = ["| step | µs per authorization |", "|---|---:|",
            f"| **event-loop thread** | **{r['loop_us_per_auth']:,}** |"]
    rows += [f"| {step} | {us:,} |" for step, us in r["loop_steps_us"].items()]
    rows.append(f"| **database worker threads** | **{r['db_threads_us_per_auth']:,}** |")
    rows += [f"| {step} | {us:,} |" for step, us in r["db_steps_us"].items()]
    rows.append(f"| **switch, all threads** | **{r['cpu_us_per_auth']:,}** |")
    return "\n".join(rows)


def main(json: bool = False) -> int:
    spy_bin = py_spy()
    if spy_bin is None:  # `benchmarks.run all` goes on without it
        print("e2e_profile skipped: py-spy not installed (.venv/bin/pip install py-spy)")
        return 0
    seconds = float(os.environ.get("PAYSWITCH_BENCH_SECONDS", "30"))
    terminals = int(os.environ.get("PAYSWITCH_BENCH_TERMINALS", "8"))
    rate = int(os.environ.get("PAYSWITCH_PROFILE_RATE", "250"))
    with tempfile.TemporaryDirectory(prefix="payswitch-profile-") as log_dir:
        r = run(seconds, terminals, rate, log_dir, spy_bin)
    if json:
        print(jsonlib.dumps(r))
        return 0
    print(f"{r['authorizations']} authorizations, {r['auth_per_s']}/s, p50 {r['p50_ms']} ms,"
          f" p99 {r['p99_ms']} ms; samples: {r['samples']}")
    print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main("--json" in sys.argv))
