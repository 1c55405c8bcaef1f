"""``payswitch hsm ...``: init a dev token, import/generate keys, TR-31 export/import,
list them.

Configuration comes from the environment: ``SOFTHSM2_CONF`` (the token directory's
conf file), ``PAYSWITCH_HSM_TOKEN`` (token label, default ``payswitch``) and
``PAYSWITCH_HSM_PIN``. Key values are never printed; clear components may be given as
``-`` to be read without echo instead of on the command line (shell history, ps).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys

from payswitch.hsm import roles
from payswitch.hsm.errors import HsmError
from payswitch.hsm.keys import KeyType
from payswitch.hsm.token import (
    DEFAULT_LABEL,
    DEV_PIN,
    ENV_CONF,
    ENV_PIN,
    ENV_ROLE,
    ENV_SO_PIN,
    ENV_TOKEN,
    make_token,
)

DEFAULT_DIR = "var/softhsm"


def _hex(value: str, what: str) -> bytes:
    if value == "-":
        value = getpass.getpass(f"{what} (hex, not echoed): ")
    try:
        return bytes.fromhex(value.strip())
    except ValueError:
        raise HsmError(f"{what} is not hex") from None


def _open():
    from payswitch.hsm.core import Hsm

    return Hsm.from_env()


@contextlib.contextmanager
def _ceremony(h):
    """Clear components are a key ceremony: on a switch/issuer token it needs the SO PIN
    (``PAYSWITCH_HSM_SO_PIN``, else asked without echo)."""
    if h.role == roles.PERSONALISATION:
        yield
        return
    so_pin = h.config.so_pin or getpass.getpass("SO PIN (key ceremony): ")
    with h.ceremony(so_pin):
        yield


def cmd_init(args: argparse.Namespace) -> int:
    directory = args.dir or (
        os.path.dirname(os.environ[ENV_CONF]) if os.environ.get(ENV_CONF) else DEFAULT_DIR
    )
    label = args.label or os.environ.get(ENV_TOKEN, DEFAULT_LABEL)
    if not os.environ.get(ENV_PIN) or not os.environ.get(ENV_SO_PIN):
        print(f"hsm init: {ENV_PIN}/{ENV_SO_PIN} not set: using the DEV PINs "
              "(development tokens only)", file=sys.stderr)
    from payswitch.hsm.core import Hsm

    role = args.role or (roles.PERSONALISATION if args.devkeys in ("issuer", "terminal")
                         else roles.SWITCH)
    cfg = make_token(directory, label, role=role)
    with Hsm(cfg):  # the first open binds the role (and the SO PIN's hash) to the token
        pass
    if args.devkeys:
        from payswitch.hsm import devkeys

        with Hsm(cfg) as h:
            loader = {"switch": devkeys.load_switch_keys, "issuer": devkeys.load_issuer_keys,
                      "terminal": devkeys.load_terminal_keys}[args.devkeys]
            n = len(loader(h))
        print(f"# loaded {n} TEST keys ({args.devkeys} side)", file=sys.stderr)
    print(f"export {ENV_CONF}={cfg.conf}")
    print(f"export {ENV_TOKEN}={cfg.label}")
    print(f"export {ENV_ROLE}={cfg.role}")
    if cfg.pin == DEV_PIN and not os.environ.get(ENV_PIN):
        print(f"export {ENV_PIN}={DEV_PIN}  # dev token only")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    kcvs = args.kcv or []
    with _open() as h:
        if args.under:
            if args.component:
                raise HsmError("give either --component(s) or --under/--cryptogram")
            if not args.cryptogram or len(kcvs) != 1:
                raise HsmError("--under needs --cryptogram and exactly one --kcv")
            kcv = h.import_key_cryptogram(args.label, args.type, args.under,
                                          _hex(args.cryptogram, "cryptogram"), kcvs[0],
                                          alg=args.alg)
        else:
            comps = [_hex(c, f"component {i + 1}") for i, c in enumerate(args.component or [])]
            if not comps:
                raise HsmError("give --component (one per component) or --under")
            if len(kcvs) not in (len(comps), len(comps) + 1):
                raise HsmError("one --kcv per component (and optionally one for the key)")
            whole = kcvs[len(comps)] if len(kcvs) > len(comps) else None
            with _ceremony(h):
                kcv = h.import_key_components(args.label, args.type, comps,
                                              kcvs[: len(comps)], alg=args.alg, kcv=whole)
    print(f"{args.label} {args.type} KCV {kcv}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    with _open() as h:
        kcv, crypt = h.generate_key(args.label, args.type, alg=args.alg,
                                    export_under=args.export_under)
    print(f"{args.label} {args.type} KCV {kcv}")
    if crypt is not None:
        print(f"cryptogram under {args.export_under}: {crypt.hex().upper()}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _open() as h:
        kcv, block = h.generate_key_tr31(args.label, args.type, args.kbpk, alg=args.alg,
                                         exportability=args.exportability)
    print(f"{args.label} {args.type} KCV {kcv}")
    print(f"key block: {block}")
    return 0


def cmd_import_tr31(args: argparse.Namespace) -> int:
    block = args.block
    if block == "-":
        block = sys.stdin.readline().strip()
    with _open() as h:
        kcv = h.import_key_tr31(args.label, args.type, args.kbpk, block, kcv=args.kcv)
    print(f"{args.label} {args.type} KCV {kcv}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _open() as h:
        keys = h.list_keys()
    print(f"{'LABEL':<24} {'TYPE':<6} {'ALG':<5} {'KCV':<7} USAGE")
    for k in keys:
        print(f"{k.label:<24} {k.key_type.value:<6} {k.alg.value:<5} {k.kcv:<7} {k.usage}")
    return 0


def _guard(fn):
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except HsmError as e:
            print(f"hsm: {type(e).__name__}: {e}", file=sys.stderr)
            return 2

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("hsm", help="HSM token and keys (SoftHSM2 / PKCS#11)")
    sub = p.add_subparsers(dest="hsm_command", required=True)
    types = [t.value for t in KeyType]

    s = sub.add_parser("init", help="create a SoftHSM token (dev/test) and print its env")
    s.add_argument("--dir", help=f"token directory (default: that of ${ENV_CONF}, "
                                 f"else {DEFAULT_DIR})")
    s.add_argument("--label", help=f"token label (default ${ENV_TOKEN} or {DEFAULT_LABEL})")
    s.add_argument("--devkeys", choices=("switch", "issuer", "terminal"),
                   help="also load the documented TEST key set for that side")
    s.add_argument("--role", choices=roles.ROLES,
                   help="the token's role, fixed at setup (default: switch; personalisation "
                        "with --devkeys issuer/terminal)")
    s.set_defaults(func=_guard(cmd_init))

    s = sub.add_parser("import-key", help="import a key from components or a cryptogram")
    s.add_argument("--label", required=True)
    s.add_argument("--type", required=True, choices=types)
    s.add_argument("--alg", choices=("TDES", "AES", "HMAC"))
    s.add_argument("--component", action="append", help="clear component, hex ('-': prompt)")
    s.add_argument("--kcv", action="append", help="KCV of each component / of the key")
    s.add_argument("--under", help="label of the ZMK/KEK the cryptogram is under")
    s.add_argument("--cryptogram", help="the key encrypted under --under (hex, ECB)")
    s.set_defaults(func=_guard(cmd_import))

    s = sub.add_parser("generate-key", help="generate a key, optionally export under a ZMK")
    s.add_argument("--label", required=True)
    s.add_argument("--type", required=True, choices=types)
    s.add_argument("--alg", choices=("TDES", "AES", "HMAC"))
    s.add_argument("--export-under", help="ZMK label: print the key's cryptogram under it")
    s.set_defaults(func=_guard(cmd_generate))

    s = sub.add_parser("export", help="generate a key and print it as a TR-31 key block "
                                      "under a KBPK (TDES: version B, AES: version D)")
    s.add_argument("--label", required=True)
    s.add_argument("--type", required=True, choices=types)
    s.add_argument("--alg", choices=("TDES", "AES"))
    s.add_argument("--kbpk", required=True, help="label of the ZMK/KEK protecting the block")
    s.add_argument("--exportability", default="N", choices=("E", "N", "S"))
    s.set_defaults(func=_guard(cmd_export))

    s = sub.add_parser("import", help="import a key from a TR-31 key block (prints its KCV)")
    s.add_argument("--label", required=True)
    s.add_argument("--type", required=True, choices=types)
    s.add_argument("--kbpk", required=True, help="label of the ZMK/KEK protecting the block")
    s.add_argument("--block", required=True, help="the key block ('-': read from stdin)")
    s.add_argument("--kcv", help="expected KCV (checked when given)")
    s.set_defaults(func=_guard(cmd_import_tr31))

    s = sub.add_parser("list", help="labels, types, KCVs and usage (never values)")
    s.set_defaults(func=_guard(cmd_list))
