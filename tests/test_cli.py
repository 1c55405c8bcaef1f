"""The `payswitch` console script (lab/cli.py) carries every package's subcommands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from payswitch.lab.cli import build_parser

SUBCOMMANDS = {"serve", "demo", "load", "certify", "simulate", "hsm", "ledger", "ach",
               "iso20022"}


def test_every_subcommand_is_registered():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) >= SUBCOMMANDS


def test_each_subcommand_answers_help_through_the_module_entry_point():
    for name in sorted(SUBCOMMANDS):
        out = subprocess.run([sys.executable, "-m", "payswitch.lab.cli", name, "--help"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (name, out.stderr)
        assert out.stdout.startswith(f"usage: payswitch {name}"), (name, out.stdout[:80])


def test_the_installed_console_script_is_the_lab_dispatcher():
    script = os.path.join(os.path.dirname(sys.executable), "payswitch")
    if not os.path.exists(script):
        pytest.skip("payswitch not installed next to this interpreter (make setup)")
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    listed = out.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert set(listed) >= SUBCOMMANDS
