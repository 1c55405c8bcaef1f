"""scripts/check_layers.py (run by `make lint`) passes on this repo and fails on each kind
of import that breaks the layers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_layers.py"
_spec = importlib.util.spec_from_file_location("check_layers", SCRIPT)
check_layers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_layers)


def test_this_repo_follows_the_layers():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert check_layers.violations(ROOT) == []


@pytest.mark.parametrize("path, source, expect", [
    ("switch/demo.py", "from payswitch.simulators import cards\n",
     "switch/ imports payswitch.simulators"),
    ("switch/x.py", "def f():\n    import payswitch.lab.realparts\n",
     "switch/ imports payswitch.lab.realparts"),
    ("switch/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
     "    from payswitch.simulators.load import LoadConfig\n",
     "switch/ imports payswitch.simulators.load"),
    ("ledger/x.py", "from payswitch.switch.ledgerwire import det_id\n",
     "ledger/ imports payswitch.switch.ledgerwire"),
    ("codecs/iso8583/x.py", "from ...hsm import Hsm\n", "codecs/ imports payswitch.hsm"),
    ("routing/x.py", "import importlib\nimportlib.import_module(f'payswitch.ledger.{n}')\n",
     "routing/ imports payswitch.ledger"),
    ("simulators/x.py", "from payswitch.switch.mux import Mux\n",
     "simulators/ imports payswitch.switch.mux"),
    ("hsm/testing.py", "import pytest\n", "hsm/ imports pytest, a test-only package"),
])
def test_a_forbidden_import_is_reported(tmp_path, path, source, expect):
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text(source)
    found = check_layers.violations(tmp_path)
    assert len(found) == 1 and expect in found[0], found
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True,
                         text=True)
    assert out.returncode == 1 and expect in out.stdout


@pytest.mark.parametrize("path, source", [
    ("switch/x.py", "from payswitch.ledger import Ledger\nfrom . import mux\n"),
    ("codecs/iso8583/x.py", "from ..pan import mask_pan\nfrom .dialect import Dialect\n"),
    ("lab/x.py", "from payswitch.simulators import cards\nimport pytest\n"),
    ("benchmarks/x.py", "from payswitch.lab import realparts\n"),
])
def test_an_allowed_import_passes(tmp_path, path, source):
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text(source)
    assert check_layers.violations(tmp_path) == []
