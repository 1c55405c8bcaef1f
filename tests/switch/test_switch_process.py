"""`payswitch serve` as a real process: SIGTERM drain, and SAF surviving SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psycopg
import trio
from switchkit import FakeIssuer, Terminal, approve, config_dict, purchase, serving, trio_test

from payswitch.codecs.iso8583 import Message


def write_toml(path, cfg: dict) -> str:
    """Just enough TOML for config_dict's shape (tables and arrays of tables)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    lines = []
    for key, section in cfg.items():
        for table in section if isinstance(section, list) else [section]:
            lines.append(f"[[{key}]]" if isinstance(section, list) else f"[{key}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class SwitchProcess:
    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self.proc: trio.Process | None = None
        self.ports: dict[str, int] = {}

    async def start(self) -> SwitchProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PAYSWITCH_TEST_UNSET_DSN", None)
        self.proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "payswitch.lab.cli", "serve", "--config",
             self.config_path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        buf = b""
        with trio.fail_after(15):
            while b"\n" not in buf:
                chunk = await self.proc.stdout.receive_some(4096)
                assert chunk, "switch exited before it was ready"
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode()
        assert line.startswith("payswitch ready "), line
        self.ports = json.loads(line.removeprefix("payswitch ready "))["listeners"]
        return self

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout_s: float = 10) -> int:
        with trio.fail_after(timeout_s):
            rc = await self.proc.wait()
        await self.proc.stdout.aclose()
        return rc

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.signal(signal.SIGKILL)
            await self.wait()


def saf_states(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select mti, state from switch_saf order by id").fetchall()


@trio_test
async def test_sigterm_drains_in_flight_request_and_exits_0(dsn, tmp_path):
    issuer = FakeIssuer(lambda m: (1.0, approve(m)))
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port, request_timeout_ms=3000)
        cfg["switch"]["drain_timeout_ms"] = 4000
        sw = await SwitchProcess(write_toml(tmp_path / "switch.toml", cfg)).start()
        try:
            await issuer.signed_on.wait()
            term = await Terminal.connect(sw.ports["pos"])
            await term.send(purchase())
            await issuer.wait_for(lambda: issuer.traffic("0200"), 5)
            sw.signal(signal.SIGTERM)
            resp = await term.recv(5)  # answered although the switch is stopping
            rc = await sw.wait(10)
            await term.aclose()
        finally:
            await sw.kill()
    assert resp.response_code == "00"
    assert rc == 0
    assert issuer.received[-1].network_code == "002"  # signed off on the way out


@trio_test
async def test_reversal_survives_sigkill_in_flight_and_after_timeout(dsn, tmp_path):
    answering = False

    def answer(m: Message) -> Message | None:
        return approve(m) if answering and m.mti.startswith("042") else None

    issuer = FakeIssuer(answer)
    async with serving(issuer):
        path = write_toml(tmp_path / "switch.toml", config_dict(dsn, issuer.port))
        # 1. Killed while the purchase is at the issuer: nothing answered, nothing queued.
        sw = await SwitchProcess(path).start()
        try:
            term = await Terminal.connect(sw.ports["pos"])
            await term.send(purchase(stan="000001"))
            await issuer.wait_for(lambda: issuer.traffic("0200"), 5)
            await sw.kill()
            await term.aclose()
            # 2. Restarted: recovery queues the 0420 and answers the duplicate 91.
            sw = await SwitchProcess(path).start()
            term = await Terminal.connect(sw.ports["pos"])
            dup = await term.request(purchase(stan="000001"))
            # 3. A purchase that times out under this process; its 0420 goes unanswered...
            timed_out = await term.request(purchase(stan="000002"))
            await issuer.wait_for(lambda: len(issuer.traffic("042")) >= 3, 5)
            await sw.kill()
            await term.aclose()
            assert [s for _, s in saf_states(dsn)] == ["pending", "pending"]
            # 4. ...and is delivered by the next process once the issuer answers.
            answering = True
            sw = await SwitchProcess(path).start()
            await issuer.wait_for(
                lambda: [s for _, s in saf_states(dsn)] == ["acked", "acked"], 10)
        finally:
            await sw.kill()
    assert dup.response_code == "91" and timed_out.response_code == "91"
    assert len(issuer.traffic("0200")) == 2  # the duplicate did not reach the issuer
    first, second = issuer.traffic("0200")
    reversed_stans = {m.original_data[4:10] for m in issuer.traffic("042")}
    assert reversed_stans == {first.stan, second.stan}
