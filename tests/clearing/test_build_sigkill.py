"""SIGKILL during `payswitch clearing build`: no file or a complete one, never a
payment presented twice after the re-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime

import psycopg
import pytest

from payswitch.codecs.clearing import base2, ipm
from payswitch.ledger import Ledger
from tests.clearing import ledgerkit as kit

D = date(2026, 11, 27)
N = 1500  # per network


def _cmd(pg_dsn, out):
    return [sys.executable, "-m", "payswitch.lab.cli", "clearing", "build", "--date",
            D.isoformat(), "--out", str(out), "--dsn", pg_dsn, "--details",
            "tests.clearing.ledgerkit:details", "--network", "visa=base2:412345",
            "--network", "mastercard=ipm-blocked:512345"]


def _read_all(out) -> dict[str, list]:
    files = {}
    for path in out.iterdir():
        if path.name.startswith("."):
            continue  # a temp file: never a name a reader picks up
        data = path.read_bytes()
        f = base2.read(data) if path.suffix == ".ctf" else ipm.read(data, blocked=True)
        files[path.name] = [p.pan for p in f.presentments]
    return files


@pytest.mark.slow
def test_sigkill_during_build_leaves_no_file_or_a_complete_one(pg_dsn, tmp_path):
    clock = kit.Clock(datetime(2026, 11, 27, 10))
    with Ledger(pg_dsn, mac=kit.MAC, clock_ns=clock, migrate=True) as led:
        kit.setup_accounts(led)
        for i in range(1, 2 * N + 1):
            kit.authorize(led, i, 100 + i, link="visa" if i % 2 else "mastercard")
    out = tmp_path / "out"
    env = {**os.environ, "CLEARING_FAKE_DELAY_S": "1.5"}
    kills = 0
    for delay in (0.3, 0.8, 1.2, 1.6, 2.0, 2.5, 3.0):
        proc = subprocess.Popen(_cmd(pg_dsn, out), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)  # a random point of the build, not a proof of anything
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        if out.exists():
            for name, pans in _read_all(out).items():  # complete, or it would not read
                assert len(pans) == N, name
    assert kills >= 3
    done = subprocess.run(_cmd(pg_dsn, out), env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    files = _read_all(out)
    assert sorted(files) == ["mastercard-20261127-001.ipm", "visa-20261127-001.ctf"]
    pans = [p for v in files.values() for p in v]
    assert len(pans) == len(set(pans)) == 2 * N
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        (n,) = conn.execute("select count(*) from presentments").fetchone()
    assert n == 2 * N
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    again = subprocess.run(_cmd(pg_dsn, out), env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()
            if not p.name.startswith(".")} == before
