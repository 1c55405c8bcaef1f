"""`payswitch ledger verify | balances | migrate`.

The DSN comes from ``--dsn`` or ``PAYSWITCH_PG_DSN``. The event MAC key for ``verify`` comes
from one of: ``--mac-provider module:factory`` (a no-argument factory returning the MAC
callable — how the switch plugs in its HSM-backed MAC without the ledger importing the HSM),
``--mac-key-file PATH`` (hex), or the environment variable named by ``--mac-key-env``
(default PAYSWITCH_EVENT_MAC_KEY, hex). Without any, verify checks everything but the MACs
and exits 2 (incomplete) unless ``--no-mac`` says that is intended.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import psycopg

from . import events as ev
from .types import LedgerError
from .verify import verify

EXIT_OK, EXIT_DISCREPANCY, EXIT_INCOMPLETE, EXIT_ERROR = 0, 1, 2, 3
DEFAULT_KEY_ENV = "PAYSWITCH_EVENT_MAC_KEY"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("ledger", help="double-entry ledger tools")
    sub = p.add_subparsers(dest="ledger_command", required=True)

    v = sub.add_parser("verify", help="check balances, limits, event chain, holds")
    _common(v)
    v.add_argument("--json", action="store_true", help="JSON report (ledger_balanced, ok, ...)")
    v.add_argument("--mac-provider", metavar="MODULE:FACTORY")
    v.add_argument("--mac-key-file", metavar="PATH", help="file holding the key in hex")
    v.add_argument("--mac-key-env", metavar="VAR", default=DEFAULT_KEY_ENV)
    v.add_argument("--no-mac", action="store_true",
                   help="do not check event MACs (and do not fail for it)")
    v.add_argument("--max-items", type=int, default=50, help="items listed per check")
    v.set_defaults(func=cmd_verify)

    b = sub.add_parser("balances", help="account balances, for people")
    _common(b)
    b.add_argument("--ledger", type=int, help="only this ledger (ISO 4217 numeric)")
    b.add_argument("--limit", type=int, default=200)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_balances)

    m = sub.add_parser("migrate", help="create or upgrade the ledger tables")
    _common(m)
    m.add_argument("--app-role", help="role to grant INSERT/SELECT-only history to")
    m.set_defaults(func=cmd_migrate)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: $PAYSWITCH_PG_DSN)")
    p.add_argument("--schema", default=None, help="schema holding the ledger tables")


def _connect(args: argparse.Namespace) -> psycopg.Connection:
    dsn = args.dsn or os.environ.get("PAYSWITCH_PG_DSN")
    if not dsn:
        raise LedgerError("no database: give --dsn or set PAYSWITCH_PG_DSN")
    options = f"-c search_path={args.schema}" if args.schema else None
    if args.schema and not args.schema.isidentifier():
        raise LedgerError(f"bad schema name {args.schema!r}")
    try:
        if options:
            return psycopg.connect(dsn, autocommit=True, options=options)
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as e:
        raise LedgerError(f"cannot connect: {e}") from e


def mac_from_args(args: argparse.Namespace) -> ev.MacFunction | None:
    if args.mac_provider:
        mod, _, name = args.mac_provider.partition(":")
        if not name:
            raise LedgerError("--mac-provider wants module:factory")
        return getattr(importlib.import_module(mod), name)()
    if args.mac_key_file:
        with open(args.mac_key_file, encoding="ascii") as f:
            return ev.hmac_sha256(_hex_key(f.read().strip()))
    key = os.environ.get(args.mac_key_env)
    if key:
        return ev.hmac_sha256(_hex_key(key.strip()))
    return None


def _hex_key(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError as e:
        raise LedgerError("event MAC key must be hex") from e


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        mac = mac_from_args(args)
        with _connect(args) as conn:
            report = verify(conn, mac, max_items=args.max_items)
    except (LedgerError, psycopg.Error) as e:
        print(f"ledger verify: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(report.to_json() if args.json else report.to_text())
    if not report.ledger_balanced or not report.chain.intact or \
            report.approvals_without_hold_count or report.holds_without_approval_count \
            or report.events_without_outbox_count:
        return EXIT_DISCREPANCY
    if mac is None and not args.no_mac:
        if not args.json:
            print(f"(no MAC key: set {args.mac_key_env}, --mac-key-file or --mac-provider; "
                  "or pass --no-mac)", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def cmd_balances(args: argparse.Namespace) -> int:
    try:
        with _connect(args) as conn:
            rows = conn.execute(
                "select id, ledger, code, flags, debits_pending, debits_posted, "
                "credits_pending, credits_posted from accounts "
                "where %(l)s::int is null or ledger = %(l)s order by ledger, code, id "
                "limit %(n)s", {"l": args.ledger, "n": args.limit}).fetchall()
    except (LedgerError, psycopg.Error) as e:
        print(f"ledger balances: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps([dict(id=str(r[0]), ledger=r[1], code=r[2], flags=r[3],
                               debits_pending=r[4], debits_posted=r[5], credits_pending=r[6],
                               credits_posted=r[7]) for r in rows], indent=2))
        return EXIT_OK
    from .money import BY_NUMERIC
    print(f"{'account':36}  {'ccy':>4} {'code':>5} {'dr pending':>14} {'dr posted':>14} "
          f"{'cr pending':>14} {'cr posted':>14} {'net (major)':>16}")
    for aid, lg, code, _flags, dp, dpo, cp, cpo in rows:
        c = BY_NUMERIC.get(lg)
        exp = c.exponent if c else 2
        net = cpo - dpo
        net_s = f"{net / 10 ** exp:,.{exp}f}" if exp else f"{net:,}"
        print(f"{aid!s:36}  {c.alpha if c else lg:>4} {code:>5} {dp:>14,} {dpo:>14,} "
              f"{cp:>14,} {cpo:>14,} {net_s:>16}")
    if len(rows) == args.limit:
        print(f"(first {args.limit} accounts; --limit to see more)")
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from .schema import migrate
    try:
        with _connect(args) as conn:
            migrate(conn, app_role=args.app_role)
    except (LedgerError, psycopg.Error) as e:
        print(f"ledger migrate: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    print("ledger schema up to date")
    return EXIT_OK
