"""`payswitch ach show|validate FILE` and `payswitch iso20022 validate FILE`.

The one place these codecs meet files, the environment and a terminal; the codecs
themselves stay pure. Exit codes: 0 valid, 1 invalid (the error names line/record
type/field, or the element path), 2 cannot run (file unreadable, no schema).

The ISO 20022 schema directory comes from ``--schemas DIR``, else the environment
variable PAYSWITCH_ISO20022_SCHEMAS, else ``[iso20022] schema_dir`` in the TOML file
given with ``--config``, else the cache ``make setup`` fills (``.cache/iso20022`` in
the repository).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tomllib
from pathlib import Path

from payswitch.codecs import iso20022, nacha
from payswitch.codecs.nacha import codes

SCHEMA_ENV = "PAYSWITCH_ISO20022_SCHEMAS"
DEFAULT_SCHEMA_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "iso20022"
MAX_FILE_BYTES = 64 * 1024 * 1024  # both formats: far above any file we send or take
EXIT_OK, EXIT_INVALID, EXIT_ERROR = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    ach = sub.add_parser("ach", help="NACHA ACH files").add_subparsers(
        dest="ach_command", required=True)
    for name, func, help_ in (("show", ach_show, "print a file's batches and entries"),
                              ("validate", ach_validate, "check a file, name the first error")):
        p = ach.add_parser(name, help=help_)
        p.add_argument("file")
        p.add_argument("--relax", action="append", default=[],
                       choices=["origin-destination", "custom-trace-numbers", "noc-checks"],
                       help="accept what real-world files break (repeatable; strict by default)")
        p.set_defaults(func=func)
    iso = sub.add_parser("iso20022", help="ISO 20022 messages").add_subparsers(
        dest="iso20022_command", required=True)
    v = iso.add_parser("validate", help="safe-parse, XSD-validate and read one message")
    v.add_argument("file")
    v.add_argument("--schemas", metavar="DIR", help=f"XSD directory (else ${SCHEMA_ENV})")
    v.add_argument("--config", metavar="FILE", help="TOML file with [iso20022] schema_dir")
    v.add_argument("--reject-reply", action="store_true",
                   help="when invalid, print the pacs.002 RJCT payswitch would answer")
    v.set_defaults(func=iso_validate)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        print(f"{path}: {e.strerror}", file=sys.stderr)
        return None
    if len(data) > MAX_FILE_BYTES:
        print(f"{path}: larger than {MAX_FILE_BYTES} bytes", file=sys.stderr)
        return None
    return data


def _relax(args) -> nacha.Relaxations:
    return nacha.Relaxations(origin_destination="origin-destination" in args.relax,
                             custom_trace_numbers="custom-trace-numbers" in args.relax,
                             noc_checks="noc-checks" in args.relax)


def _load_ach(args) -> tuple[int, nacha.NachaFile | None]:
    data = _read(args.file)
    if data is None:
        return EXIT_ERROR, None
    try:
        return EXIT_OK, nacha.read(data, _relax(args))
    except nacha.NachaError as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return EXIT_INVALID, None


def _mask(account: str) -> str:
    """Account numbers show at most their last four characters, and never more than
    half of them (a 4-digit account shows 2)."""
    shown = min(4, len(account) // 2)
    return "*" * (len(account) - shown) + account[len(account) - shown:]


def _money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def ach_validate(args) -> int:
    rc, f = _load_ach(args)
    if f is not None:
        n = len(f.entries())
        print(f"{args.file}: valid, {len(f.batches)} batches, {n} entries")
    return rc


def ach_show(args) -> int:
    rc, f = _load_ach(args)
    if f is None:
        return rc
    print(f"file  to {f.immediate_destination} {f.destination_name!r} "
          f"from {f.immediate_origin} {f.origin_name!r}, "
          f"created {f.creation_date} {f.creation_time}, id {f.file_id_modifier}")
    for b in f.batches:
        debit, credit = nacha.reader.totals(b.entries)
        print(f"batch {b.batch_number} {b.sec_code} class {b.service_class} {b.company_name!r} "
              f"({b.company_id}) {b.entry_description!r} effective {b.effective_date}"
              f"{' settled day ' + b.settlement_date if b.settlement_date else ''}: "
              f"{len(b.entries)} entries, debits {_money(debit)}, credits {_money(credit)}")
        for e in b.entries:
            print(f"  {e.trace_number} code {e.transaction_code} {e.routing} "
                  f"{_mask(e.account):>17} {_money(e.amount):>14} {e.individual_name!r}")
            for a in e.addenda:
                print("    " + _addenda_line(a))
    return EXIT_OK


def _addenda_line(a) -> str:
    if isinstance(a, nacha.ReturnAddenda):
        what = codes.RETURN_CODES.get(a.reason_code, "unknown reason")
        return f"return {a.reason_code} ({what}) of trace {a.original_trace}"
    if isinstance(a, nacha.NocAddenda):
        what = codes.CHANGE_CODES.get(a.change_code, "unknown change")
        return (f"change {a.change_code} ({what}) of trace {a.original_trace}: "
                f"corrected {_mask(a.corrected_data)}")
    return f"addenda: {a.payment_info!r}"


def schema_dir(explicit: str | None, config: str | None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(SCHEMA_ENV):
        return Path(os.environ[SCHEMA_ENV])
    if config:
        with open(config, "rb") as f:
            value = tomllib.load(f).get("iso20022", {}).get("schema_dir")
        if value:
            return (Path(config).parent / value).resolve()
    return DEFAULT_SCHEMA_CACHE


def iso_validate(args) -> int:
    data = _read(args.file)
    if data is None:
        return EXIT_ERROR
    try:
        store = iso20022.SchemaStore(schema_dir(args.schemas, args.config))
    except (OSError, tomllib.TOMLDecodeError) as e:
        print(f"{args.config}: {e}", file=sys.stderr)
        return EXIT_ERROR
    try:
        msg = iso20022.parse(data, store)
    except iso20022.SchemaMissing as e:
        print(f"{args.file}: {e.reason} ({store.directory})", file=sys.stderr)
        return EXIT_ERROR
    except iso20022.Iso20022Error as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        if args.reject_reply:
            reply = iso20022.rejection(e, msg_id="RJCT-" + (e.msg_id or "NOTPROVIDED")[:30],
                                       created=dt.datetime.now(dt.UTC).replace(microsecond=0))
            sys.stdout.write(iso20022.build(reply, store).decode() + "\n")
        return EXIT_INVALID
    kind = iso20022.model.MESSAGE_TYPES[type(msg)]
    ident = getattr(msg, "msg_id", None) or getattr(msg, "assignment_id", "")
    print(f"{args.file}: valid {iso20022.VERSIONS[kind]}, id {ident}")
    return EXIT_OK
