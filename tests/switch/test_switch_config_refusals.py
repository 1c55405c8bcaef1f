"""Bad config is refused at start, by `payswitch serve` itself, with the key named and
exit code 2 (switch/commands.py), before anything listens or connects: an unknown
rule field, a threshold out of range, a route naming a missing link, a terminal group
without a mode, and stand-in card checks without their key or without an HSM."""

from __future__ import annotations

import subprocess
import sys

import pytest

BASE = """
[[listeners]]
name = "pos"
[[links]]
name = "visa"
host = "127.0.0.1"
port = 1
[[routes]]
prefix = "4"
link = "visa"
"""
RANGE = """
[routing]
[[routing.ranges]]
prefix = "4"
routes = [{ link = "%s" }]
"""


@pytest.mark.parametrize(("extra", "key"), [
    ("[risk]\n[risk.rules]\nmax_card_1x = 3\n", "risk.rules.max_card_1x"),
    ("[risk]\n[risk.thresholds]\ndecline = 1200\n", "risk.thresholds.decline"),
    ("[risk]\n[risk.terminal_groups.feed]\nterminals = [\"SIMT\"]\n",
     "risk.terminal_groups.feed.mode"),
    (RANGE % "amex", "routing.ranges[0].routes[0].link"),
    (RANGE % "visa" + '[routing.standin."4"]\ncard_checks = ["pvv"]\n',
     "routing.standin.4.pvk"),
    (RANGE % "visa" + '[routing.standin."4"]\ncard_checks = ["cvv"]\ncvk = "cvk.visa"\n',
     "routing.standin.4.card_checks"),  # no [hsm] token to hold the issuer's key
])
def test_serve_refuses_bad_config_with_the_key_named(tmp_path, extra, key):
    path = tmp_path / "bad.toml"
    path.write_text(BASE + extra)
    done = subprocess.run([sys.executable, "-m", "payswitch.lab.cli", "serve", "--config",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"payswitch serve: {key}:"), done.stderr
