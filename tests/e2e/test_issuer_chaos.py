"""Chaos (slow): the Visa issuer simulator is SIGKILLed for 30 s in the middle of a
demo-sized run, against the same run without the fault, both measured here.

Processes as in the demo (PostgreSQL, both simulators, `payswitch serve`), without
HSM tokens; [routing] with breakers and stand-in for the Visa range, [risk] in shadow
mode. Asserted: once Visa's breaker is open no terminal waits for its timeout; Visa
authorizations go on by stand-in within the limits; every advice is acknowledged
after the simulator is back; `ledger verify` is clean; the approval rate is within 2
points of the run without the fault."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest
import trio

from payswitch.lab import riskdemo
from payswitch.lab.demo import Proc, payswitch_argv, running_topology, settle_ledger
from payswitch.simulators.load import LoadConfig, run_load

RUN_S = 100.0
KILL_AT_S, DOWN_S = 30.0, 30.0
ISSUER_TIMEOUT_MS = 2000
# generous per-card limits: the load uses a handful of test cards all day
STANDIN = {"max_daily_count": 10_000, "max_daily_amount_minor": 10**10,
           "max_single_amount_minor": 100_000, "processing_codes": ["00", "01"],
           "max_risk_score": 999, "require_card_checks": False}


def _visa_port(log_dir: str) -> int:
    cfg = Path(log_dir, "payswitch.toml").read_text()
    block = cfg.split('name = "visa"', 1)[1]
    return int(block.split("port = ", 1)[1].split("\n", 1)[0])


def run(fault: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="payswitch-chaos-") as log_dir, \
            running_topology(log_dir, metrics=True, ledger=True,
                             issuer_timeout_ms=ISSUER_TIMEOUT_MS,
                             risk=riskdemo.config_lines(None, STANDIN)) as topo, \
            contextlib.ExitStack() as stack:
        cfg = LoadConfig(topo.host, topo.port, profile="mixed", terminals=8,
                         duration_s=RUN_S, cards="mixed", timeout_s=10.0,
                         progress=False, keep_samples=True)
        port = _visa_port(log_dir)
        events: dict[str, float] = {}

        async def chaos(start: float) -> None:
            await trio.sleep_until(start + KILL_AT_S)
            os.kill(topo.simulators["visa"].pid, signal.SIGKILL)
            events["killed"] = trio.current_time() - start
            await trio.sleep(DOWN_S)

            def restart() -> None:
                proc = Proc("sim-visa-again", payswitch_argv(
                    "simulate", "--network", "visa", "--port", str(port),
                    "--latency-ms", "3"), log_dir)
                stack.callback(proc.stop)
                proc.wait_for_line("payswitch-sim ready")
            await trio.to_thread.run_sync(restart)
            events["back"] = trio.current_time() - start

        async def main() -> dict:
            async with trio.open_nursery() as n:
                if fault:
                    n.start_soon(chaos, trio.current_time())
                return await run_load(cfg)
        report = trio.run(main)
        deadline = time.monotonic() + 60
        while topo.saf_pending() and time.monotonic() < deadline:
            time.sleep(0.5)
        pending = topo.saf_pending()
        topo.switch.stop()
        figures = riskdemo.figures(topo.dsn, [], topo.switch.stderr_text())
        ledger = settle_ledger(topo.dsn, topo.ledger_env["PAYSWITCH_EVENT_MAC_KEY"])
    return {"report": report, "events": events, "saf_pending": pending,
            "figures": figures, "ledger_ok": ledger["ledger_verify_ok"]}


def _rate(r: dict) -> float:
    return r["approved"] / r["sent"]


@pytest.mark.slow
def test_killing_an_issuer_for_30s_keeps_authorizing_and_drains_its_advices():
    calm = run(fault=False)
    chaos = run(fault=True)
    print("CHAOS", json.dumps({
        "approval_calm": round(_rate(calm["report"]), 4),
        "approval_chaos": round(_rate(chaos["report"]), 4),
        "sent": [calm["report"]["sent"], chaos["report"]["sent"]],
        "events": chaos["events"], "figures": chaos["figures"]}, default=str))
    killed, back = chaos["events"]["killed"], chaos["events"]["back"]
    fig = chaos["figures"]
    opened = [t for t in fig["breaker_transitions"] if t[0] == "visa" and t[2] == "open"]
    assert opened, "visa's breaker never opened"
    # once open (a few seconds after the kill at most), no Visa request waits for the
    # 2 s timeout: every answer in the outage's second half came well before it
    late = [s for s in chaos["report"]["samples"]
            if s[3] == "visa" and killed + 10 < s[0] < back and s[1] >= 1.0]
    assert late == []
    outage = [s for s in chaos["report"]["samples"]
              if s[3] == "visa" and killed + 10 < s[0] < back]
    assert outage and sum(s[2] == "00" for s in outage) / len(outage) > 0.5
    assert fig["standin"]["approved"] > 0
    assert fig["standin"]["advices"] == {"acked": fig["standin"]["approved"]}
    assert not chaos["saf_pending"]
    assert chaos["ledger_ok"] and calm["ledger_ok"]
    assert calm["report"]["errors"] == 0 and chaos["report"]["errors"] == 0
    assert abs(_rate(chaos["report"]) - _rate(calm["report"])) <= 0.02
