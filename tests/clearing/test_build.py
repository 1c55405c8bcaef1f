"""Cut-off and presentment selection on a real ledger; `clearing build` files on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime

import psycopg
import pytest

from payswitch.codecs.clearing import base2, ipm
from payswitch.ledger import Ledger, LedgerError
from payswitch.ledger.clearing_build import Network, build
from payswitch.simulators.clearing import settle
from tests.clearing import ledgerkit as kit

D = date(2026, 11, 27)
NETS = [Network("visa", "base2", "412345"), Network("mastercard", "ipm-blocked", "512345")]


def _day(led_clock, d: date, hour: int = 10) -> None:
    led_clock.set(datetime(d.year, d.month, d.day, hour))


def test_each_approved_unreversed_authorization_is_presented_once(pg_dsn, tmp_path):
    clock = kit.Clock(datetime(2026, 11, 27, 10))
    with Ledger(pg_dsn, mac=kit.MAC, clock_ns=clock, migrate=True) as led:
        kit.setup_accounts(led)
        kit.authorize(led, 1, 1000)                              # pending: held amount
        kit.authorize(led, 2, 2000)
        kit.post(led, 2, 1500)                                   # completed for less
        kit.authorize(led, 3, 3000)
        kit.void(led, 3)                                         # reversed: not presented
        kit.authorize(led, 4, 4000, timeout_s=60)
        clock.set(datetime(2026, 11, 27, 11))
        assert led.expire_pending() == 1                         # expired: not presented
        kit.decline(led, 5)                                      # declined: no hold
        kit.authorize(led, 6, 6000, link="mastercard")
        kit.authorize(led, 7, 700, processing_code="200000")     # refund: a credit
        kit.authorize(led, 9, 900, link=None)                    # on-us: no network file
        kit.authorize(led, 10, 1100, processing_code="010000")   # cash
        _day(clock, date(2026, 11, 28))
        kit.authorize(led, 8, 800)                               # after the cut-off

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        report = build(conn, NETS, D, tmp_path, kit.details())
    assert [(r["network"], r["presentments"]) for r in report] == [("visa", 4),
                                                                   ("mastercard", 1)]
    visa = base2.read((tmp_path / "visa-20261127-001.ctf").read_bytes())
    got = [(p.pan, p.kind, p.amount_minor, p.auth_amount_minor) for p in visa.presentments]
    assert got == [(kit.card(1).pan, "sale", 1000, None), (kit.card(2).pan, "sale", 1500, 2000),
                   (kit.card(7).pan, "credit", 700, None), (kit.card(10).pan, "cash", 1100, None)]
    assert visa.presentments[0].auth_code == "A00001" and visa.file_date == D
    assert all(p.terminal_id == "TERM0001" for p in visa.presentments)
    mc = ipm.read((tmp_path / "mastercard-20261127-001.ipm").read_bytes(), blocked=True)
    assert [(p.pan, p.amount_minor) for p in mc.presentments] == [
        (kit.card(6, "mastercard").pan, 6000)]
    arns = [p.arn for p in visa.presentments + mc.presentments]
    assert len(set(arns)) == len(arns)

    # the networks take the files: every presentment accepted, net = sales - credit - fees
    v = settle((tmp_path / "visa-20261127-001.ctf").read_bytes(), "visa")
    assert not v.rejected and len(v.accepted) == 4 and v.file_error is None
    fees = sum((-1 if a.kind == "credit" else 1) * a.interchange_minor for a in v.accepted)
    assert v.net_minor == {"840": 1000 + 1500 - 700 + 1100 - fees}
    m = settle((tmp_path / "mastercard-20261127-001.ipm").read_bytes(), "mastercard",
               blocked=True)
    assert not m.rejected and [a.amount_minor for a in m.accepted] == [6000]

    # a re-run of the same date: same bytes, nothing new
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        again = build(conn, NETS, D, tmp_path, kit.details())
        assert [r["new"] for r in again] == [0, 0] and not any(r["written"] for r in again)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

        # the next day takes the late one and nothing presented before, even once posted
        with Ledger(pg_dsn, mac=kit.MAC, clock_ns=clock) as led:
            kit.post(led, 1)
        nxt = build(conn, NETS, date(2026, 11, 28), tmp_path, kit.details())
        assert [r["presentments"] for r in nxt] == [1, 0]
        late = base2.read((tmp_path / "visa-20261128-001.ctf").read_bytes())
        assert [p.pan for p in late.presentments] == [kit.card(8).pan]
        (n,) = conn.execute("select count(*) from presentments").fetchone()
        (d,) = conn.execute("select count(distinct payment_id) from presentments").fetchone()
        assert n == d == 6


def test_a_file_with_other_bytes_is_never_overwritten(pg_dsn, tmp_path):
    clock = kit.Clock(datetime(2026, 11, 27, 10))
    with Ledger(pg_dsn, mac=kit.MAC, clock_ns=clock, migrate=True) as led:
        kit.setup_accounts(led)
        kit.authorize(led, 1, 1000)
    (tmp_path / "visa-20261127-001.ctf").write_bytes(b"something else")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, \
            pytest.raises(LedgerError, match="not overwritten"):
        build(conn, NETS[:1], D, tmp_path, kit.details())
    assert (tmp_path / "visa-20261127-001.ctf").read_bytes() == b"something else"


def run_cli(pg_dsn, out, *extra, env=None):
    return subprocess.run(
        [sys.executable, "-m", "payswitch.lab.cli", "clearing", "build", "--date",
         D.isoformat(), "--out", str(out), "--dsn", pg_dsn, "--details",
         "tests.clearing.ledgerkit:details", "--network", "visa=base2:412345",
         "--network", "mastercard=ipm:512345", *extra],
        capture_output=True, text=True, timeout=120, env=env)


def test_cli_build_then_show(pg_dsn, tmp_path):
    clock = kit.Clock(datetime(2026, 11, 27, 10))
    with Ledger(pg_dsn, mac=kit.MAC, clock_ns=clock, migrate=True) as led:
        kit.setup_accounts(led)
        kit.authorize(led, 1, 1000)
        kit.authorize(led, 2, 2500, link="mastercard")
    r = run_cli(pg_dsn, tmp_path, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [(f["file"], f["presentments"]) for f in doc["files"]] == [
        ("visa-20261127-001.ctf", 1), ("mastercard-20261127-001.ipm", 1)]
    shown = subprocess.run([sys.executable, "-m", "payswitch.lab.cli", "clearing", "show",
                            str(tmp_path / "mastercard-20261127-001.ipm")],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "2500" in shown.stdout
    assert kit.card(2, "mastercard").pan not in shown.stdout + r.stdout + r.stderr
