"""Tiny dispatcher: ``python -m benchmarks.run NAME [--json]`` imports ``benchmarks.NAME``
and calls its ``main(json: bool) -> int``; ``all`` runs every module that exists."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import benchmarks


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                  if m.name not in ("run",) and not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run")
    p.add_argument("name", help=f"one of: all, {', '.join(available())}")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    names = available() if args.name == "all" else [args.name]
    rc = 0
    for name in names:
        if name not in available():
            print(f"no benchmark named {name!r}", file=sys.stderr)
            return 2
        mod = importlib.import_module(f"benchmarks.{name}")
        rc = max(rc, int(mod.main(json=args.json) or 0))
    return rc


if __name__ == "__main__":
    sys.exit(main())
