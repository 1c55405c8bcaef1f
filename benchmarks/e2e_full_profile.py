"""Where the switch's CPU goes per participant, under the e2e benchmark's full mode.

The topology and load of ``benchmarks.e2e_full`` (HSM, link MACs, ledger, journal;
pre-built frames, closed loop). During the window py-spy samples every thread of
``payswitch serve`` with ``--gil`` (only the thread holding the GIL, so waits do not
count); a sample goes to the first row of ``ROWS`` whose marks are in its stack; the
shares are scaled to the switch's CPU per authorization read from /proc over the same
window (all threads). CPU spent without the GIL (libpq, SoftHSM's C code, the kernel's
socket work) is spread in proportion: an approximation. Prints the Markdown table of
switch/README.md ("Where the CPU goes") or, with --json, the figures.

    .venv/bin/pip install py-spy          # a measuring tool, not a project dependency
    python -m benchmarks.run e2e_full_profile [--json]

Knobs (environment): PAYSWITCH_BENCH_SECONDS (default 20), PAYSWITCH_BENCH_TERMINALS
(default 8), PAYSWITCH_PROFILE_RATE (samples/s, default 200), PAYSWITCH_PROFILE_KEEP
(a path: keep py-spy's raw stacks there).
"""

from __future__ import annotations

import collections
import json as jsonlib
import os
import shutil
import subprocess
import sys
import tempfile

import trio

from benchmarks.e2e_full import closed_loop, full_topology, tree_cpu_seconds


def py_spy() -> str | None:
    found = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    return found if os.path.exists(found) else None


# (row, marks): the first row with a mark in the sample's stack takes it. Work done in
# a worker thread (database, ledger writer, HSM) is named by what runs there, so it
# lands on the participant that asked for it.
HOP = "thread hops: to a worker thread and back (journal, HSM, ledger)"
# A sample whose innermost frames are trio's thread machinery is a hop, whatever asked
# for it; the others go by ROWS.
HOP_MARKS = ("to_thread_run_sync", "start_thread_soon", "WakeupSocketpair",
             "run_sync_soon", "_handle_job", "_work", "deliver_worker_fn_result",
             "report_back_in_trio_thread_fn", "Thread._bootstrap", "SimpleQueue.get",
             "Condition.wait", "Lock.acquire")
HOP_DEPTH = 3
ROWS = (
    ("BEGIN / COMMIT: journal group commits and ledger batches",
     ("Connection.transaction", "_commit_gen", "_enter_gen", "_exit_gen")),
    # claims, issuer_requests and completes of several authorizations in one statement:
    # on the journal's writer thread, with none of the callers on its stack
    ("journal writer thread: a batch's one statement (claim, issuer_request, complete)",
     ("Store._write_loop",)),
    ("CheckDuplicate: fingerprint + claim (journal)", ("Store.claim", "pans.py:fingerprint",
                                                       "CheckDuplicate.prepare")),
    ("Forward: journal issuer_request", ("Store.append",)),
    ("record: the answer's journal row, events, SAF (complete)",
     ("Store.complete", "Recorder.complete", "(switch/record.py")),
    ("PostLedger: hold + MAC-chained events (ledger writer)",
     ("PostLedger.prepare", "(ledger/", "(switch/ledgerwire.py", "event_mac")),
    ("TranslatePin: PIN block TPK/DUKPT -> ZPK in the HSM",
     ("TranslatePin.prepare", "translate_pin")),
    ("Forward: link MAC (generate + verify in the HSM)",
     ("generate_mac", "verify_mac", "macing.py")),
    ("Forward: PAN token + AES-GCM at rest (HSM)", ("pans.py", "pan_token", "encrypt_pan")),
    ("codec: decode / encode (terminal iso87ascii, Visa, Mastercard)",
     ("(codecs/iso8583/",)),
    ("channel: framing, read loop, batched writes", ("(switch/channel.py",
                                                      "(codecs/framing.py")),
    ("Forward: outbound message, MUX, link send / match",
     ("Forward.prepare", "(switch/mux.py", "(switch/links.py", "(switch/messages.py")),
    ("Identify, CheckMac, CheckTransaction, CheckOnus, Route",
     ("Identify.prepare", "CheckMac.prepare", "CheckTransaction.prepare",
      "CheckOnus.prepare", "Route.prepare", "(routing/")),
    ("JSON log lines", ("(switch/logs.py", "logging/__init__")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("transaction manager, context, connection task", ("(switch/txn.py",
                                                       "(switch/server.py",
                                                       "(switch/participants/")),
    ("trio: scheduler, epoll, sockets; the rest", ("",)),
)


def attribute(raw_path: str) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    with open(raw_path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not n.isdigit():  # a stack py-spy could not finish reading
                continue
            leaf = ";".join(stack.split(";")[-HOP_DEPTH:])
            if any(m in leaf for m in HOP_MARKS):
                counts[HOP] += int(n)
                continue
            for row, marks in ROWS:
                if any(m in stack for m in marks):
                    counts[row] += int(n)
                    break
    return counts


def run(seconds: float, terminals: int, rate: int, log_dir: str, spy_bin: str,
        workers: int = 1) -> dict:
    raw = os.path.join(log_dir, "spy.txt")
    with full_topology(log_dir, seconds, terminals, workers) as (topo, frames, _, _):
        pid = topo.switch.pid
        spy = subprocess.Popen([spy_bin, "record", "--pid", str(pid), "--duration",
                                str(int(seconds)), "--rate", str(rate), "--format", "raw",
                                "--threads", "--nonblocking", "--gil", "-o", raw],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = tree_cpu_seconds(pid)
        figures = trio.run(closed_loop, topo.host, topo.port, frames, seconds)
        cpu = tree_cpu_seconds(pid) - before
        spy.wait(seconds + 60)
    if os.environ.get("PAYSWITCH_PROFILE_KEEP"):  # the raw stacks, to refine ROWS
        shutil.copy(raw, os.environ["PAYSWITCH_PROFILE_KEEP"])
    n = figures["authorizations"]
    us = cpu * 1e6 / n if n else 0.0
    counts = attribute(raw)
    total = sum(counts.values()) or 1
    return {"benchmark": "e2e_full_profile", "seconds": seconds, "terminals": terminals,
            "workers": workers, "load_average": os.getloadavg()[0], **figures,
            "cpu_us_per_auth": round(us), "samples": sum(counts.values()),
            "rows_us": {row: round(us * counts[row] / total) for row, _ in ROWS
                        if counts[row]} | ({HOP: round(us * counts[HOP] / total)}
                                              if counts[HOP] else {})}


def table(r: dict) -> str:
    rows = ["| step | µs per authorization |", "|---|---:|"]
    rows += [f"| {row} | {v:,} |" for row, v in sorted(r["rows_us"].items(),
                                                       key=lambda kv: -kv[1])]
    rows.append(f"| **switch, all threads** | **{r['cpu_us_per_auth']:,}** |")
    return "\n".join(rows)


def main(json: bool = False) -> int:
    spy_bin = py_spy()
    if spy_bin is None:  # `benchmarks.run all` goes on without it
        print("e2e_full_profile skipped: py-spy not installed (.venv/bin/pip install py-spy)")
        return 0
    seconds = float(os.environ.get("PAYSWITCH_BENCH_SECONDS", "20"))
    terminals = int(os.environ.get("PAYSWITCH_BENCH_TERMINALS", "8"))
    rate = int(os.environ.get("PAYSWITCH_PROFILE_RATE", "200"))
    with tempfile.TemporaryDirectory(prefix="payswitch-profile-") as log_dir:
        r = run(seconds, terminals, rate, log_dir, spy_bin)
    if json:
        print(jsonlib.dumps(r))
        return 0
    print(f"{r['authorizations']} authorizations, {r['auth_per_s']}/s, p50 {r['p50_ms']} ms,"
          f" p99 {r['p99_ms']} ms, errors {r['errors']}; {r['samples']} samples, "
          f"load average {r['load_average']:.1f}")
    print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main("--json" in sys.argv))
