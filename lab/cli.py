"""`payswitch` command line: one dispatcher, each package brings its own subcommands.

A module listed in COMMAND_MODULES exposes ``register(subparsers)``, which adds its
parser(s) and sets ``func`` (called with the parsed args, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "payswitch.switch.commands",  # serve
    "payswitch.lab.demo",  # demo
    "payswitch.simulators.cli",  # load, certify, simulate (network simulators)
    "payswitch.hsm.cli",  # hsm init | import-key | generate-key | list
    "payswitch.ledger.cli",  # ledger verify | balances
    "payswitch.codecs.bankcli",  # ach show | validate, iso20022 validate
    "payswitch.switch.top",  # top (live console over metrics endpoints)
    "payswitch.ledger.clearing_cli",  # clearing show | build
    "payswitch.lab.risk_cli",  # risk train
    "payswitch.ledger.recon_cli",  # recon (clearing date reconciliation)
    "payswitch.lab.bank_cli",  # iso20022 submit, instant-peer, ach originate / returns
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payswitch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue  # that package has no commands yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
