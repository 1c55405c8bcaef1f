"""`payswitch serve --workers N` (issue 8): N processes behind one port (SO_REUSEPORT),
one issuer link per worker with disjoint STAN slices, metrics port + index, a killed
worker restarted by the parent, SIGTERM drains them all."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

import trio
from hypothesis import given
from hypothesis import strategies as st
from switchkit import FakeIssuer, Terminal, config_dict, purchase, serving, trio_test
from test_switch_process import write_toml

from payswitch.lab.realparts import free_port
from payswitch.switch.mux import Mux
from payswitch.switch.workers import WorkerSpec


@given(st.integers(1, 64), st.integers(0, 900_000))
def test_worker_slices_are_disjoint_and_in_range(count, lo):
    slices = [WorkerSpec(i, count).share(lo, 999_999) for i in range(count)]
    for (a_lo, a_hi), (b_lo, b_hi) in zip(slices, slices[1:], strict=False):
        assert a_lo <= a_hi < b_lo <= b_hi
    assert slices[0][0] >= lo and slices[-1][1] <= 999_999


@given(st.integers(1, 8), st.data())
def test_mux_stans_stay_in_the_workers_slice(count, data):
    index = data.draw(st.integers(0, count - 1))
    lo, hi = WorkerSpec(index, count).share(1, 999_999)
    mux = Mux(4, 4)
    mux.stans = (lo, hi)
    for _ in range(data.draw(st.integers(1, 50))):
        assert lo <= int(mux.next_stan()) <= hi


def _two_free_ports() -> int:
    """A port p with p + 1 also free just now (the workers bind them a moment later)."""
    for _ in range(50):
        base = free_port()
        with contextlib.ExitStack() as held:
            try:
                for p in (base, base + 1):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", p))
            except OSError:
                continue
        return base
    raise AssertionError("no two consecutive free ports")


def _children(pid: int) -> set[int]:
    """Child processes of every thread of ``pid`` (trio forks from a worker thread)."""
    found: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            found |= {int(x) for x in f.read().split()}
    return found


async def _start(path: str) -> tuple[trio.Process, dict]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "payswitch.lab.cli", "serve", "--workers", "2", "--config",
         path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    buf = b""
    with trio.fail_after(60):
        while b"\n" not in buf:
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, "serve --workers exited before it was ready"
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    assert line.startswith("payswitch ready "), line
    return proc, json.loads(line.removeprefix("payswitch ready "))


async def _approvals(port: int, connections: int, first_stan: int) -> list[str]:
    codes = []
    for i in range(connections):  # new connections: the kernel spreads them
        term = await Terminal.connect(port)
        resp = await term.request(purchase(stan=f"{first_stan + i:06d}"))
        codes.append(resp.response_code)
        await term.aclose()
    return codes


@trio_test
async def test_two_workers_share_a_port_link_each_and_survive_a_kill(dsn, tmp_path):
    issuer = FakeIssuer()
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port)
        base = _two_free_ports()  # metrics_port + index: a fixed base is needed here
        cfg["switch"].update(metrics_port=base, metrics_host="127.0.0.1")
        proc, ready = await _start(write_toml(tmp_path / "switch.toml", cfg))
        try:
            port = ready["listeners"]["pos"]
            assert [w["ready"] for w in ready["workers"]] == [True, True]
            assert ready["metrics_ports"] == [base, base + 1]
            # one link per worker: two sign-ons, on two connections, STANs in two halves
            await issuer.wait_for(lambda: issuer.connections >= 2 and len(
                [m for m in issuer.received if m.network_code == "001"]) >= 2, 15)
            halves = {int(m.stan) <= 499_999 for m in issuer.received
                      if m.network_code == "001"}
            assert halves == {True, False}
            assert await _approvals(port, 12, 1) == ["00"] * 12
            by_half = {int(m.stan) <= 499_999 for m in issuer.traffic("0200")}
            assert by_half == {True, False}  # both workers served terminals

            victim = ready["workers"][0]["pid"]
            os.kill(victim, signal.SIGKILL)
            with trio.fail_after(30):  # the parent starts a new worker 0
                while victim in _children(proc.pid) or len(_children(proc.pid)) < 2:
                    await trio.sleep(0.1)
                while len([m for m in issuer.received if m.network_code == "001"]) < 3:
                    await trio.sleep(0.1)
            assert await _approvals(port, 12, 100) == ["00"] * 12
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                rc = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert rc == 0
    assert len([m for m in issuer.received if m.network_code == "002"]) == 2  # sign-offs


@trio_test
async def test_workers_drain_when_their_parent_is_killed(dsn, tmp_path):
    issuer = FakeIssuer()
    async with serving(issuer):
        proc, ready = await _start(write_toml(tmp_path / "switch.toml",
                                              config_dict(dsn, issuer.port)))
        pids = [w["pid"] for w in ready["workers"]]
        proc.kill()  # SIGKILL: the parent cannot pass anything on
        await proc.wait()
        with trio.fail_after(20):  # each notices within a second and drains
            while any(os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in pids):
                await trio.sleep(0.1)
    # both signed off on the way out, as on SIGTERM
    assert len([m for m in issuer.received if m.network_code == "002"]) == 2


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "Z"


@trio_test
async def test_workers_that_cannot_start_fail_the_command_as_one_process_would(tmp_path):
    cfg = config_dict("host=127.0.0.1 port=1 dbname=none connect_timeout=2", 1)
    path = write_toml(tmp_path / "switch.toml", cfg)
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "payswitch.lab.cli", "serve", "--workers", "2",
             "--config", path], capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 1  # database unreachable, as without --workers
    assert b"payswitch ready" not in done.stdout
