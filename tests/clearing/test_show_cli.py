"""`payswitch clearing show FILE`: through the real console entry point, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from payswitch.codecs.clearing import base2, ipm
from tests.clearing.strategies import sample_file

PAN = "4761739001010010"


def show(path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "payswitch.lab.cli", "clearing", "show",
                           str(path), *extra], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name,data,fmt", [
    ("out.ctf", base2.write(sample_file(n=2)), "base2"),
    ("out.ipm", ipm.write(sample_file(n=2)), "ipm"),
    ("blocked.ipm", ipm.write(sample_file(n=2), blocked=True), "ipm-blocked"),
])
def test_lists_records_with_masked_pans(tmp_path, name, data, fmt):
    path = tmp_path / name
    path.write_bytes(data)
    r = show(path)
    assert r.returncode == 0, r.stderr
    assert PAN not in r.stdout
    assert r.stdout.count("476173******0010") == 2
    assert fmt in r.stdout.splitlines()[0] and "2 presentments" in r.stdout
    doc = json.loads(show(path, "--json").stdout)
    assert doc["format"] == fmt and doc["amount_total_minor"] == 2468
    assert [x["pan"] for x in doc["records"]] == ["476173******0010"] * 2


def test_bad_file_exits_1_naming_the_record(tmp_path):
    data = bytearray(base2.write(sample_file(n=2)))
    data[168 + 80] = ord("X")  # amount of the first TCR0
    path = tmp_path / "bad.ctf"
    path.write_bytes(bytes(data))
    r = show(path)
    assert r.returncode == 1 and "record 2" in r.stderr and PAN not in r.stderr
