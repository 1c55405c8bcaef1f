"""mypy over the runtime packages (codecs, hsm, ledger, routing, switch): `make lint`.

pyproject maps top-level folders into one package (codecs/ -> payswitch.codecs, ...),
which the editable install does with an import hook that mypy cannot follow. So this
builds a tree of symlinks (.venv/typecheck/payswitch/<folder> -> ../../../<folder>) from
[tool.setuptools.package-dir] and runs mypy on it; the settings are [tool.mypy] in
pyproject.toml. Extra arguments go to mypy.

    python scripts/typecheck.py [mypy args]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".venv" / "typecheck"
CHECKED = ("codecs", "hsm", "ledger", "routing", "switch")


def link_tree() -> Path:
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    pkg = TREE / "payswitch"
    pkg.mkdir(parents=True, exist_ok=True)
    for name, folder in dirs.items():
        parts = name.split(".")[1:]
        if len(parts) != 1:  # sub-packages come with their parent's folder
            continue
        link = pkg / parts[0]
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(ROOT / folder, pkg))
    init = pkg / "__init__.py"
    if not init.is_symlink():
        init.symlink_to(os.path.relpath(ROOT / dirs["payswitch"] / "__init__.py", pkg))
    return TREE


def main(argv: list[str]) -> int:
    tree = link_tree()
    packages = [arg for name in CHECKED for arg in ("-p", f"payswitch.{name}")]
    env = {**os.environ, "MYPYPATH": str(tree)}
    return subprocess.call([sys.executable, "-m", "mypy", "--config-file",
                            str(ROOT / "pyproject.toml"), *packages, *argv[1:]],
                           cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
