"""The demo report: one self-contained HTML file with inline SVG plots. Fast checks on
the file itself; a slow test runs the real demo with --report and opens the file in
headless Chromium (Debian's package; installed here if missing) for a screenshot."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from opskit import payswitch

from payswitch.switch.report import FILENAME, histogram_bins, write_report

REPORT = {"sent": 300, "approved": 250, "declined": 40, "timeouts": 6, "errors": 4,
          "p50_ms": 18.0, "p99_ms": 80.0, "tps": 15.0, "elapsed_s": 20.0,
          "ledger_verify_ok": True, "ledger_balanced": True,
          "ledger": {"holds": 250, "onus_holds": 80, "holds_by_state": {"posted": 250},
                     "posted_at_clearing": 250, "transfers": 500, "events": 900,
                     "outbox_unsent": 900, "verify_text": "ledger verify: clean"},
          "links": {"visa": {"switch": {"requests": 120, "timeouts": 3, "late": 0,
                                        "saf_acknowledged": 3, "saf_pending": 0}}}}


def samples(n: int = 300, seed: int = 14) -> list[tuple[float, float, str, str]]:
    rng = random.Random(seed)
    codes = ["00"] * 25 + ["05", "51", "55", "91", "error"]
    return [(i / 15, rng.lognormvariate(-4, 0.7), rng.choice(codes),
             rng.choice(["visa", "mastercard", "onus"])) for i in range(n)]


def svgs(page: str) -> list[etree._Element]:
    return [etree.fromstring(m.encode()) for m in re.findall(r"<svg .*?</svg>", page, re.S)]


def test_report_is_one_offline_file_with_the_plots(tmp_path):
    data = samples()
    path = write_report(REPORT, data, tmp_path / "out")
    page = path.read_text()
    assert path.name == FILENAME and os.listdir(path.parent) == [FILENAME]
    assert "<script" not in page and " src=" not in page
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}
    for title in ("Latency histogram", "Latency percentiles", "Throughput", "Approval rate",
                  "Response codes by network", "Ledger", "Links"):
        assert f"<h2>{title}</h2>" in page
    plots = svgs(page)  # each one well-formed XML
    assert len(plots) == 5
    ns = {"s": "http://www.w3.org/2000/svg"}
    answered = [s for s in data if s[2] != "error"]
    bins = plots[0].xpath("//s:rect[@class='bin']", namespaces=ns)
    assert sum(int(b.get("data-count")) for b in bins) == len(answered)
    bars = plots[4].xpath("//s:rect[@class='code']", namespaces=ns)
    drawn = Counter()
    for b in bars:
        drawn[(b.get("data-network"), b.get("data-code"))] += int(b.get("data-count"))
    assert drawn == Counter((net, code) for _t, _l, code, net in data)
    assert "ledger verify: clean" in page and "posted at clearing" in page


def test_report_without_samples_still_renders(tmp_path):
    page = write_report({"sent": 0}, [], tmp_path).read_text()
    assert "no answers in this run" in page and "<h2>Summary</h2>" in page


@given(st.lists(st.floats(min_value=0.0, max_value=60_000.0), min_size=1, max_size=200))
def test_histogram_bins_hold_every_value_once(values):
    values.sort()
    bins = histogram_bins(values)
    assert sum(c for _, _, c in bins) == len(values)
    assert all(lo < hi for lo, hi, _ in bins)
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(bins, bins[1:], strict=False))
    assert values[-1] < bins[-1][1]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt when missing (root or sudo)."""
    exe = shutil.which("chromium")
    if exe is None:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "chromium"], check=True, env=env, timeout=900,
                       capture_output=True)
        exe = shutil.which("chromium")
    assert exe, "chromium could not be installed"
    return exe


@pytest.mark.slow
def test_demo_report_opens_in_headless_chromium(tmp_path, chromium):
    out = subprocess.run(payswitch("demo", "--duration", "4", "--json",
                                   "--report", str(tmp_path / "rep")),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("report: ")]
    path = line.removeprefix("report: ")
    assert path == str(tmp_path / "rep" / FILENAME) and os.path.isfile(path)
    assert "samples" not in out.stdout  # --json keeps its keys; samples go to the file
    shot = tmp_path / "report.png"
    run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          "--hide-scrollbars", "--window-size=900,2700",
                          f"--user-data-dir={tmp_path / 'profile'}",
                          f"--screenshot={shot}", f"file://{path}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.stat().st_size > 50_000, run.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("PAYSWITCH_REPORT_SCREENSHOT")  # to look at it afterwards
    if keep:
        shutil.copy(shot, keep)


def test_risk_scores_of_good_and_fraud_are_plotted_when_the_demo_had_labels(tmp_path):
    from payswitch.switch.report import risk_bins

    risk = {"scores_good": [10] * 90 + [400] * 10, "scores_fraud": [20] * 5 + [900] * 15,
            "precision": 0.6, "recall": 0.75, "decline_threshold": 349}
    page = write_report({**REPORT, "risk": risk}, samples(), tmp_path).read_text()
    plots = svgs(page)
    assert len(plots) == 6  # the 5 above and the risk scores
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert len(plots[5].xpath("//s:path[@class='risk-good']", namespaces=ns)) == 1
    assert len(plots[5].xpath("//s:path[@class='risk-fraud']", namespaces=ns)) == 1
    assert "good: 100" in page and "fraud: 20" in page
    assert risk_bins(risk["scores_fraud"])[18] == 0.75  # 900 // 50
    assert abs(sum(risk_bins(risk["scores_good"])) - 1) < 1e-9
