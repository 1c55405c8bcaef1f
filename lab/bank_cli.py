"""`payswitch iso20022 submit` (and the ACH switch-side commands): bank payments from
the command line. Added to the ``iso20022`` / ``ach`` command groups that
codecs/bankcli.py makes, so the user sees one group per format.

    payswitch iso20022 submit PAIN001 --peer HOST:PORT [--dsn DSN] [--schemas DIR]
        [--deadline-s 10] [--status-wait-s 5] [--status-tries 3] [--json]

    payswitch ach originate --date YYYY-MM-DD --out DIR [--dsn DSN]
    payswitch ach settle --date YYYY-MM-DD [--dsn DSN]
    payswitch ach process FILE [--dsn DSN]          # the operator's returns / NOCs
    payswitch instant-peer [--port 0] [--late-s 12] [--reject-share F] [--late-share F]
        [--never-share F] [--seed N] [--schemas DIR]

`iso20022 submit` connects to the participant bank, first asks (pacs.028) about every
payment a previous run left pending, then sends each instruction of the file as a
pacs.008 and waits for
each to be settled or reversed; prints the states. Rerunning the same file sends
nothing twice. Exit 0 when every payment is final, 1 if the file is invalid, 2 if it
cannot run. Event MAC key: hex in $PAYSWITCH_EVENT_MAC_KEY.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys

import trio

from payswitch.codecs import bankcli, nacha
from payswitch.codecs.iso20022 import Iso20022Error, SchemaStore
from payswitch.codecs.iso20022 import model as m
from payswitch.codecs.iso20022.wire import Codec
from payswitch.ledger.events import hmac_sha256
from payswitch.simulators.instant import InstantPeer, PeerConfig
from payswitch.switch.ach_desk import AchDesk
from payswitch.switch.instant import InstantConfig, InstantSwitch
from payswitch.switch.instant_book import InstantBook

MAC_KEY_ENV = "PAYSWITCH_EVENT_MAC_KEY"
CONNECT_TIMEOUT_S = 10.0


def _group(sub: argparse._SubParsersAction, name: str) -> argparse._SubParsersAction:
    parser = sub.choices[name]
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def register(sub: argparse._SubParsersAction) -> None:
    if "iso20022" not in sub.choices:
        return
    p = _group(sub, "iso20022").add_parser(
        "submit", help="pain.001 -> instant pacs.008s to the peer bank, settled or reversed")
    p.add_argument("file")
    p.add_argument("--peer", required=True, metavar="HOST:PORT")
    p.add_argument("--dsn", help="PostgreSQL (else $PAYSWITCH_PG_DSN)")
    p.add_argument("--schemas", metavar="DIR")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--allow-missing-schemas", action="store_true",
                   help="build/read messages whose XSD is not in DIR by the model alone")
    p.add_argument("--deadline-s", type=float, default=10.0)
    p.add_argument("--status-wait-s", type=float, default=5.0)
    p.add_argument("--status-tries", type=int, default=3)
    p.add_argument("--bic", default=InstantConfig.bic)
    p.add_argument("--peer-bic", default=InstantConfig.peer_bic)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=submit)
    ach = _group(sub, "ach")
    o = ach.add_parser("originate", help="cut-off: payables with money -> a NACHA payout file")
    o.add_argument("--date", required=True, type=dt.date.fromisoformat)
    o.add_argument("--out", required=True, metavar="DIR")
    s = ach.add_parser("settle", help="move due batches from ACH clearing to settlement")
    s.add_argument("--date", required=True, type=dt.date.fromisoformat)
    r = ach.add_parser("process", help="apply an operator returns or NOC file")
    r.add_argument("file")
    for q, func in ((o, ach_originate), (s, ach_settle), (r, ach_process)):
        q.add_argument("--dsn", help="PostgreSQL (else $PAYSWITCH_PG_DSN)")
        q.set_defaults(func=func)
    peer = sub.add_parser("instant-peer", help="run the instant-payments peer bank simulator")
    peer.add_argument("--port", type=int, default=0)
    peer.add_argument("--schemas", metavar="DIR")
    peer.add_argument("--allow-missing-schemas", action="store_true")
    for name, default in (("late-s", 12.0), ("reject-share", 0.0), ("late-share", 0.0),
                          ("never-share", 0.0)):
        peer.add_argument(f"--{name}", type=float, default=default)
    peer.add_argument("--seed", type=int, default=0)
    peer.set_defaults(func=instant_peer)


def mac_from_env():
    key = os.environ.get(MAC_KEY_ENV)
    if not key:
        raise SystemExit(f"set ${MAC_KEY_ENV} (hex) to sign ledger events")
    return hmac_sha256(bytes.fromhex(key))


async def run_submit(pain: m.Pain001, book: InstantBook, codec: Codec, cfg: InstantConfig,
                     host: str, port: int) -> tuple[int, dict[str, str], dict[str, int]]:
    with trio.fail_after(CONNECT_TIMEOUT_S):
        stream = await trio.open_tcp_stream(host, port)
    sw = InstantSwitch(book, codec, cfg)
    async with trio.open_nursery() as n:
        await n.start(sw.run, stream)
        recovered = await sw.recover()
        result = await sw.submit(pain)
        n.cancel_scope.cancel()
    return recovered, result, sw.stats


def submit(args) -> int:
    data = bankcli._read(args.file)
    dsn = args.dsn or os.environ.get("PAYSWITCH_PG_DSN")
    if data is None or not dsn:
        print("need a readable file and --dsn or $PAYSWITCH_PG_DSN", file=sys.stderr)
        return 2
    codec = Codec(SchemaStore(bankcli.schema_dir(args.schemas, args.config)),
                  require_schemas=not args.allow_missing_schemas)
    try:
        pain = codec.parse(data, expect="pain.001")
    except Iso20022Error as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return 2 if isinstance(e, bankcli.iso20022.SchemaMissing) else 1
    assert isinstance(pain, m.Pain001)
    host, _, port = args.peer.rpartition(":")
    cfg = InstantConfig(bic=args.bic, peer_bic=args.peer_bic, deadline_s=args.deadline_s,
                        status_wait_s=args.status_wait_s, status_tries=args.status_tries)
    book = InstantBook(dsn, mac_from_env())
    try:
        recovered, result, stats = trio.run(run_submit, pain, book, codec, cfg, host,
                                            int(port))
    finally:
        book.close()
    counts: dict[str, int] = {}
    for state in result.values():
        counts[state] = counts.get(state, 0) + 1
    report = {"payments": len(result), "recovered": recovered, "states": counts,
              "stats": stats, "unvalidated": sorted(codec.unvalidated)}
    print(json.dumps(report) if args.json else
          " ".join(f"{k}={v}" for k, v in {**counts, "recovered": recovered}.items()))
    return 0 if all(s in ("settled", "reversed", "rejected") for s in result.values()) else 1


def _dsn(args) -> str:
    dsn = args.dsn or os.environ.get("PAYSWITCH_PG_DSN")
    if not dsn:
        raise SystemExit("need --dsn or $PAYSWITCH_PG_DSN")
    return dsn


def ach_originate(args) -> int:
    desk = AchDesk(_dsn(args), mac_from_env())
    try:
        made = desk.originate(args.date)
    finally:
        desk.close()
    if made is None:
        print("nothing to pay out")
        return 0
    text, f = made
    path = os.path.join(args.out, f"ACH-{args.date:%Y%m%d}-{f.file_id_modifier}.ach")
    with open(path + ".tmp", "w") as out:  # whole or absent: renamed once flushed
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(path + ".tmp", path)
    print(f"{path}: {len(f.entries())} entries, {sum(e.amount for e in f.entries())} cents")
    return 0


def ach_settle(args) -> int:
    desk = AchDesk(_dsn(args), mac_from_env())
    try:
        print(f"settled {desk.settle(args.date)} cents due by {args.date}")
    finally:
        desk.close()
    return 0


def ach_process(args) -> int:
    data = bankcli._read(args.file)
    if data is None:
        return 2
    desk = AchDesk(_dsn(args), mac_from_env())
    try:
        got = desk.process(data)
    except nacha.NachaError as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return 1
    finally:
        desk.close()
    print(json.dumps(got.__dict__))
    return 0


def instant_peer(args) -> int:
    codec = Codec(SchemaStore(bankcli.schema_dir(args.schemas, None)),
                  require_schemas=not args.allow_missing_schemas)
    peer = InstantPeer(codec, PeerConfig(late_s=args.late_s, reject_share=args.reject_share,
                                         late_share=args.late_share,
                                         never_share=args.never_share, seed=args.seed))

    async def main() -> None:
        async with trio.open_nursery() as n:
            port = await n.start(peer.serve, args.port)
            print(f"ready instant-peer=127.0.0.1:{port}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
    return 0
