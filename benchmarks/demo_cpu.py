"""Where the machine's cores go during `payswitch demo`'s traffic: CPU seconds per
process over the traffic window, read from /proc (utime + stime), by role: the switch
(and its workers), each network simulator, the demo process itself (the closed-loop
terminals and the fraud feed), PostgreSQL's backends of the demo's database, the
other PostgreSQL processes, Mosquitto. Plus the machine's busy share (/proc/stat):
what is left is other people's work on a shared machine.

The window is cut from the demo's own progress line on stderr (``[###...] 1.0s sent=``):
the first and the last one, so start-up, the reversal settling, the bank phase and
the clearing day are outside it.

    python -m benchmarks.run demo_cpu [--json]
    PAYSWITCH_DEMO_ARGS="--terminals 8" python -m benchmarks.run demo_cpu

Run nothing else meanwhile: its figures are the machine's. Linux only.
"""

from __future__ import annotations

import json as jsonlib
import os
import re
import shlex
import subprocess
import sys
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROGRESS = re.compile(rb"\] +([0-9.]+)s sent=")


def _snapshot() -> dict[int, tuple[int, float, str, str]]:
    """pid -> (ppid, CPU seconds, cmdline, comm) of every process we can read."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        rest = stat[stat.rindex(")") + 2:].split()
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        out[int(name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK, cmd, comm)
    return out


def _machine_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def _role(pid: int, snap: dict, demo_pid: int) -> str | None:
    _, _, cmd, comm = snap[pid]
    if comm.startswith("postgres") or cmd.startswith("postgres"):
        return "postgres: demo database" if "payswitch_demo" in cmd else "postgres: other"
    if comm.startswith("mosquitto"):
        return "mosquitto"
    chain, p = [], pid
    while p in snap and p > 1 and p != demo_pid:
        chain.append(p)
        p = snap[p][0]
    if p != demo_pid:
        return None  # not ours
    if pid == demo_pid:
        return "demo process: terminals + fraud feed"
    for q in chain:  # the process itself, else the nearest ancestor with a role
        c = snap[q][2]
        if " serve " in c:
            return "switch"
        if "--network visa" in c:
            return "simulator visa"
        if "--network mastercard" in c:
            return "simulator mastercard"
    return "other child of the demo"


def measure(demo_args: list[str]) -> dict:
    # the text report: --json has no progress line to cut the window from
    argv = [sys.executable, "-m", "payswitch.lab.cli", "demo", *demo_args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout: list[bytes] = []
    reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True)
    reader.start()
    marks = []  # (traffic s, wall, snapshot, machine busy)
    while chunk := proc.stderr.read1(65536):
        for m in PROGRESS.finditer(chunk):
            marks.append((float(m.group(1)), time.monotonic(), _snapshot(), _machine_busy()))
    proc.wait(timeout=300)
    reader.join(10)
    text = b"".join(stdout).decode(errors="replace").splitlines()
    if len(marks) < 2:
        raise RuntimeError("no progress lines from the demo (duration under 3 s?)")
    (t0, w0, s0, m0), (t1, w1, s1, m1) = marks[0], marks[-1]
    cpu: dict[str, float] = {}
    for pid, (_, seconds, _, comm) in s1.items():
        role = _role(pid, s1, proc.pid)
        if role is None:
            continue
        before = s0[pid][1] if pid in s0 and s0[pid][3] == comm else 0.0
        cpu[role] = cpu.get(role, 0.0) + seconds - before
    wall = w1 - w0
    busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
    cores = os.cpu_count() or 1
    return {"window_s": [t0, t1], "wall_s": round(wall, 2), "machine_cores": cores,
            "machine_busy_cores": round(busy * cores, 2),
            "cores_by_role": {k: round(v / wall, 3) for k, v in
                              sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.01},
            "ours_cores": round(sum(cpu.values()) / wall, 2),
            "demo_rc": proc.returncode,
            "demo": [x.strip() for x in text
                     if x.startswith(("demo:", "  latency", "  switch:", "  risk, enforced",
                                      "  ledger verify:"))]}


def main(json: bool = False) -> int:
    result = measure(shlex.split(os.environ.get("PAYSWITCH_DEMO_ARGS", "")))
    if json:
        print(jsonlib.dumps(result))
    else:
        print("\n".join(result["demo"]) + f"\nexit {result['demo_rc']}")
        print(f"CPU over the traffic window {result['window_s'][0]:.1f}-"
              f"{result['window_s'][1]:.1f} s ({result['wall_s']} s): machine busy "
              f"{result['machine_busy_cores']} of {result['machine_cores']} cores, the "
              f"demo's processes {result['ours_cores']}")
        for role, c in result["cores_by_role"].items():
            print(f"  {role:40s} {c:5.2f} cores")
    return 0 if result["demo_rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main("--json" in sys.argv))
