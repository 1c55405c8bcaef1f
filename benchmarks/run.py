"""`python -m benchmarks.run NAME [--json]`: codec, hsm, ledger, e2e, or all."""

from __future__ import annotations

import argparse
import importlib

NAMES = ("codec", "hsm", "ledger", "e2e")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("name", choices=(*NAMES, "all"))
    parser.add_argument("--json", action="store_true", help="one JSON object per benchmark")
    args = parser.parse_args()
    for name in NAMES if args.name == "all" else (args.name,):
        importlib.import_module(f"benchmarks.{name}").main(json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
