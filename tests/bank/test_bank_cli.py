"""`payswitch ach originate | process` as a user runs them."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

from bankkit import MAC

from payswitch.codecs import nacha
from payswitch.ledger import new_account
from payswitch.ledger.types import Transfer
from payswitch.simulators.ach import AchOperator, OperatorConfig
from payswitch.switch.ach_desk import AchDesk

DAY = dt.date(2026, 11, 27)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PAYSWITCH_EVENT_MAC_KEY": "00" * 32}
    return subprocess.run([sys.executable, "-m", "payswitch.lab.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_ach_originate_then_process_the_operator_returns(pg_dsn, tmp_path):
    desk = AchDesk(pg_dsn, MAC)
    desk.led.create_accounts([new_account(5, 840, 9),
                              new_account(6, 840, 2, debits_must_not_exceed_credits=True)])
    desk.led.create_transfers([Transfer(7, 5, 6, 12_345, 840, 1)])
    desk.add_payee("m-1", 6, "SHOP ONE", "111000025", "5551234")
    out = cli("ach", "originate", "--date", DAY.isoformat(), "--out", str(tmp_path),
              "--dsn", pg_dsn)
    assert out.returncode == 0, out.stderr
    (path,) = tmp_path.glob("ACH-20261127-*.ach")
    assert "1 entries, 12345 cents" in out.stdout
    answer = AchOperator(OperatorConfig(outcomes={"5551234": "R02"})).submit(
        path.read_text(), dt.datetime.combine(DAY, dt.time(9), dt.UTC))
    returns = tmp_path / "returns.ach"
    returns.write_text(nacha.write(answer.returns))
    out = cli("ach", "process", str(returns), "--dsn", pg_dsn)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["codes"] == {"R02": 1}
    (payable,) = desk.led.lookup_accounts([6])
    assert payable.credits_posted - payable.debits_posted == 12_345
    bad = tmp_path / "bad.ach"
    bad.write_text("1" * 94 + "\n")
    out = cli("ach", "process", str(bad), "--dsn", pg_dsn)
    assert out.returncode == 1 and "line 1" in out.stderr
    desk.close()
