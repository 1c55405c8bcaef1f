"""`payswitch certify --role issuer-host` as a user runs it: a simulator process as
the host, the reports on disk, exit 0 on a pass; a suite file of the user's own with
a case the host fails exits 1 and names the rule in the summary and the JUnit XML."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from payswitch.simulators.cards import card

CLI = [sys.executable, "-m", "payswitch.lab.cli"]


@pytest.fixture
def mastercard_sim():
    proc = subprocess.Popen(CLI + ["simulate", "--network", "mastercard", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("payswitch-sim ready"), line
        yield int(line.rsplit("port=", 1)[1])
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        proc.stdout.close()


def certify(port, tmp_path, *extra):
    return subprocess.run(CLI + ["certify", "--role", "issuer-host", "--network",
                                 "mastercard", "--target", f"127.0.0.1:{port}",
                                 "--report-dir", str(tmp_path / "r"), *extra],
                          capture_output=True, text=True, timeout=120)


def test_shipped_suite_passes_and_writes_reports(mastercard_sim, tmp_path):
    out = certify(mastercard_sim, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "23/23 cases passed" in out.stdout
    assert "note: ARPC not judged" in out.stdout  # no keys given
    for name in ("summary.txt", "junit.xml", "messages.json"):
        assert (tmp_path / "r" / name).exists()
    messages = (tmp_path / "r" / "messages.json").read_text()
    assert card("mastercard_approve").pan not in messages + out.stdout


def test_a_users_own_case_that_fails_exits_1_naming_the_rule(mastercard_sim, tmp_path):
    suite = tmp_path / "bank.toml"
    suite.write_text(
        '[suite]\nname = "bank-own"\nrole = "issuer-host"\nnetwork = "mastercard"\n\n'
        '[[case]]\nname = "approve_expected_decline"\nrequest = "purchase"\n'
        'card = "mastercard_approve"\namount_minor = 100\nentry = "magstripe"\n'
        'expect_codes = ["05"]\n\n'
        '[[case]]\nname = "optional_one"\nmandatory = false\nrequest = "echo"\n'
        'expect_codes = ["00"]\n')
    out = certify(mastercard_sim, tmp_path, "--suite", str(suite))
    assert out.returncode == 1
    assert "de39_allowed: DE39 expected 05, got 00" in out.stdout
    root = ET.parse(tmp_path / "r" / "junit.xml").getroot()
    failures = [tc.get("name") for tc in root.iter("testcase") if tc.find("failure") is not None]
    assert failures == ["approve_expected_decline"]


def test_a_suite_with_a_typo_is_refused(tmp_path):
    suite = tmp_path / "typo.toml"
    suite.write_text('[suite]\nname = "x"\nrole = "issuer-host"\nnetwork = "mastercard"\n'
                     '[[case]]\nname = "a"\nrequest = "echo"\nexpect_code = ["00"]\n')
    out = certify(1, tmp_path, "--suite", str(suite))
    assert out.returncode == 2 and "unknown key 'expect_code'" in out.stderr
    assert Path(tmp_path / "r").exists() is False


def test_terminal_role_is_the_default_and_takes_target():
    out = subprocess.run(CLI + ["certify", "--list"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and len(out.stdout.split()) == 15
    sim = subprocess.Popen(CLI + ["simulate", "--network", "iso87ascii", "--port", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(sim.stdout.readline().rsplit("port=", 1)[1])
        out = subprocess.run(CLI + ["certify", "--role", "terminal", "--target",
                                    f"127.0.0.1:{port}", "--scenario", "echo_0800_301"],
                             capture_output=True, text=True, timeout=60)
    finally:
        sim.terminate()
        sim.wait(10)
        sim.stdout.close()
    assert out.returncode == 0 and "PASS  echo_0800_301" in out.stdout
