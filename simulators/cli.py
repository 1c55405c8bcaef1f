"""`payswitch load`, `payswitch certify` and `payswitch simulate`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

import trio

from payswitch.codecs.framing import KINDS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("load", help="terminal load generator (POS / ATM) against a host")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--profile", choices=("pos", "atm", "mixed"), default="mixed")
    p.add_argument("--terminals", type=int, default=4, help="terminal links (DEMO0001...)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, help="requests per second (fixed rate)")
    mode.add_argument("--closed-loop", action="store_true",
                      help="each terminal sends when answered (the default)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds")
    p.add_argument("--cards", choices=("approve", "mixed"), default="mixed",
                   help="approve: only approving cards; mixed: some declines, no-answers")
    p.add_argument("--framing", choices=("len2", "tpdu", "ascii4"), default="len2")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request seconds")
    p.add_argument("--seed", type=int)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--hsm-token", help="terminal token label (SOFTHSM2_CONF, "
                   "PAYSWITCH_HSM_PIN from the env): real PIN blocks, CVVs, ARQCs")
    p.add_argument("--dukpt-every", type=int, default=0,
                   help="terminals whose number is divisible by N use TDES DUKPT")
    p.add_argument("--mac-key", default="", metavar="LABEL",
                   help="TAK in the terminal token: MAC every request in DE64 "
                   "(retail MAC, or AES-CMAC for an AES TAK; needs --hsm-token)")
    p.set_defaults(func=_load)

    p = sub.add_parser("certify", help="certification: terminal scenarios against a host, "
                       "or a network's suite against an issuer or acquirer host")
    p.add_argument("--role", choices=("terminal", "issuer-host", "acquirer-host"),
                   default="terminal", help="terminal: the 15 iso87ascii scenarios; "
                   "issuer-host / acquirer-host: a suite (simulators/certsuite)")
    p.add_argument("--network", choices=("visa", "mastercard", "iso87ascii"),
                   default="iso87ascii", help="the network's dialect, framing and suite")
    p.add_argument("--target", help="HOST:PORT: the issuer host (issuer-host), the host's "
                   "terminal port (acquirer-host, terminal)")
    p.add_argument("--suite", help="a shipped suite name or a .toml file "
                   "(default: <network>-<role>)")
    p.add_argument("--case", action="append", help="run only these cases (repeatable)")
    p.add_argument("--listen", help="HOST:PORT the host's network link dials (port 0: a "
                   "free one, printed); acquirer-host default 127.0.0.1:0; issuer-host: "
                   "instead of --target, for an issuer host that dials the network")
    p.add_argument("--report-dir", help="default certify-reports/<suite>")
    p.add_argument("--terminal-token", help="acquirer-host: terminal token label (PIN "
                   "blocks, CVVs, ARQCs of the driven terminal)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="the host's port (terminal role; or --target)")
    p.add_argument("--framing", choices=("len2", "tpdu"), default="len2")
    p.add_argument("--terminal-id", default="DEMO0001")
    p.add_argument("--timeout", type=float, default=15.0, help="per-request seconds")
    p.add_argument("--scenario", action="append", help="run only these (repeatable)")
    p.add_argument("--list", action="store_true", help="list the scenarios (or the "
                   "suite's cases) and exit")
    p.add_argument("--json", action="store_true")
    p.add_argument("--hsm-token", help="token label (SOFTHSM2_CONF, PAYSWITCH_HSM_PIN from "
                   "the env): terminal role: the terminal's keys; issuer-host and "
                   "acquirer-host: the network's keys (ZPK, ZAK, CVK, MK-AC)")
    p.set_defaults(func=_certify)

    p = sub.add_parser("simulate", help="run a network simulator (issuer) as a process")
    p.add_argument("--network", choices=("visa", "mastercard", "iso87ascii"), default="visa")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port (see the ready line)")
    p.add_argument("--framing", choices=KINDS, help="default: the network's own")
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--late-rate", type=float, default=0.0)
    p.add_argument("--late-ms", type=int, default=0)
    p.add_argument("--link-drop-every", type=int, default=0)
    p.add_argument("--seed", type=int)
    p.add_argument("--hsm-token", help="issuer token label (SOFTHSM2_CONF, "
                   "PAYSWITCH_HSM_PIN from the env): verify PIN, CVV, CVV2, ARQC")
    p.add_argument("--mac", action="store_true", help="MAC every message (needs --hsm-token)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics (0 = any)")
    p.add_argument("--bad-mac-rate", type=float, default=0.0,
                   help="share of answers sent with a corrupted MAC")
    p.add_argument("--key-change-after", type=float, default=0.0, metavar="S",
                   help="S seconds after the first authorization, send a new ZPK (and ZAK "
                   "with --mac) in an 0800 key change (needs --hsm-token)")
    p.set_defaults(func=_simulate)


def _hsm(label: str | None):
    """An Hsm on the token named by --hsm-token, from the environment; or None."""
    if not label:
        return None
    from payswitch.hsm import Hsm, config_from_env

    # Simulator tokens (PIN pads, chips, issuer + card bureau) are personalisation
    # tokens (hsm/roles.py); a switch token is refused here.
    return Hsm(config_from_env(label, role="personalisation"))


def _load(args) -> int:
    from payswitch.simulators.load import LoadConfig, format_report, run_load

    cfg = LoadConfig(host=args.host, port=args.port, profile=args.profile,
                     terminals=args.terminals, rate=args.rate, duration_s=args.duration,
                     framing=args.framing, cards=args.cards, timeout_s=args.timeout,
                     seed=args.seed, progress=sys.stderr.isatty() or not args.json,
                     hsm=_hsm(args.hsm_token), dukpt_every=args.dukpt_every,
                     mac_key=args.mac_key)
    report = trio.run(run_load, cfg)
    print(json.dumps(report) if args.json else format_report(report))
    return 0 if report["errors"] == 0 and report["sent"] > 0 else 1


def _certify(args) -> int:
    if args.role != "terminal":
        from payswitch.simulators.certsuite.cli import run

        return run(args, _hsm)
    from payswitch.simulators.certify import SCENARIOS, Context, format_results, run_scenarios

    if args.target:
        args.host, _, port = args.target.rpartition(":")
        args.port = int(port) if port.isdigit() else None
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    if args.port is None:
        print("payswitch certify: --port is required", file=sys.stderr)
        return 2
    unknown = [s for s in args.scenario or [] if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    ctx = Context(args.host, args.port, args.framing, args.terminal_id, args.timeout,
                  hsm=_hsm(args.hsm_token))
    results = trio.run(run_scenarios, ctx, args.scenario)
    passed = all(r["passed"] for r in results)
    if args.json:
        print(json.dumps({"passed": passed, "scenarios": results}))
    else:
        print(format_results(results))
    return 0 if passed else 1


def _simulate(args) -> int:
    from payswitch.simulators.network import Faults, NetworkSimulator

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    faults = Faults(latency_ms=args.latency_ms, drop_rate=args.drop_rate,
                    late_rate=args.late_rate, late_ms=args.late_ms,
                    link_drop_every=args.link_drop_every, bad_mac_rate=args.bad_mac_rate)
    hsm = _hsm(args.hsm_token)
    if args.mac and hsm is None:
        print("payswitch simulate: --mac needs --hsm-token", file=sys.stderr)
        return 2
    sim = NetworkSimulator(args.network, framing=args.framing, host=args.host,
                           port=args.port, faults=faults, seed=args.seed, hsm=hsm,
                           mac=args.mac)

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(sim.serve)
                if args.key_change_after and hsm is not None:
                    from payswitch.simulators.keychange import change_keys_after
                    nursery.start_soon(change_keys_after, sim, args.key_change_after)
                if args.metrics_port is not None:
                    from payswitch.simulators.metrics import serve as serve_metrics
                    mport = serve_metrics(sim.stats, sim.network, args.host, args.metrics_port)
                    print(f"payswitch-sim metrics port={mport}", flush=True)
                print(f"payswitch-sim ready network={sim.network} dialect={sim.dialect_name} "
                      f"framing={sim.framing} port={port}", flush=True)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    trio.run(main)
    print(json.dumps({"network": sim.network, **sim.stats.as_dict(),
                      "arqc_by_cvn": dict(sim.issuer.arqc_by_cvn),
                      "pin_checks": dict(sim.issuer.pin_checks),
                      "key_changes": sim.key_change_log}), file=sys.stderr)
    return 0
