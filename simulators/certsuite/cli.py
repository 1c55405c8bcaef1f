"""`payswitch certify --role issuer-host|acquirer-host`: run a suite, write the reports.

Reports go to ``--report-dir`` (default ``certify-reports/<suite>``): ``summary.txt``
(also printed), ``junit.xml`` and ``messages.json`` (every exchanged message per case,
PAN masked, with the broken rules). Exit 1 when a mandatory case failed, 2 on a usage
or suite error.
"""

from __future__ import annotations

import json
import os
import sys

import trio

from payswitch.simulators.certsuite import wire
from payswitch.simulators.certsuite.acquirer_host import NetworkSide, run_acquirer_suite
from payswitch.simulators.certsuite.issuer_host import (
    run_issuer_suite,
    run_issuer_suite_listening,
)
from payswitch.simulators.certsuite.report import as_json, summary, write_reports
from payswitch.simulators.certsuite.suite import SuiteError, find_suite
from payswitch.simulators.issuer import Issuer

SIGN_ON_WAIT_S = 60.0  # acquirer-host: how long to wait for the host to dial and sign on


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def run(args, hsm_for) -> int:
    try:
        suite = find_suite(args.suite, args.role, args.network)
        target = host_port(args.target) if args.target else None
        listen = host_port(args.listen) if args.listen else None
    except (SuiteError, ValueError, OSError) as e:
        print(f"payswitch certify: {e}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(f"{c.name:<36} {'mandatory' if c.mandatory else 'optional '}  "
                        f"{c.description}" for c in suite.cases))
        return 0
    if target is None and not (args.role == "issuer-host" and listen):
        print("payswitch certify: --target HOST:PORT is required (issuer-host: or "
              "--listen HOST:PORT for a host that dials the network)", file=sys.stderr)
        return 2
    hsm = hsm_for(args.hsm_token)
    try:
        if args.role == "issuer-host" and target is None:
            result = trio.run(_issuer_listening, suite, listen, hsm, args.case)
        elif args.role == "issuer-host":
            result = trio.run(run_issuer_suite, suite, *target, hsm, args.case)
        else:
            result = trio.run(_acquirer, suite, listen or ("127.0.0.1", 0), target, hsm,
                              hsm_for(args.terminal_token), args.case)
    except (wire.LinkError, trio.TooSlowError) as e:
        print(f"payswitch certify: {e or 'the host did not sign on in time'}",
              file=sys.stderr)
        return 1
    directory = args.report_dir or os.path.join("certify-reports", suite.name)
    paths = write_reports(result, directory)
    if args.json:
        print(json.dumps({**as_json(result), "reports": paths}))
    else:
        print(summary(result))
        print(f"reports: {paths['summary']}, {paths['junit']}, {paths['messages']}")
    return 0 if result.passed else 1


async def _issuer_listening(suite, listen, hsm, cases):
    async def ready(port):
        print(f"payswitch-certify listening network={suite.network} host={listen[0]} "
              f"port={port}: point the issuer host's network link here", flush=True)

    async with trio.open_nursery() as nursery:
        result = []

        async def run_it(task_status=trio.TASK_STATUS_IGNORED):
            result.append(await run_issuer_suite_listening(
                suite, *listen, hsm, cases, SIGN_ON_WAIT_S, task_status=task_status))
        port = await nursery.start(run_it)
        await ready(port)
    return result[0]


async def _acquirer(suite, listen, target, hsm, terminal_hsm, cases):
    # The network's issuer checks PIN, CVV and ARQC only when the driven terminal has
    # the keys to make real ones; else it decides by the card table's labels.
    issuer = Issuer(hsm=hsm if terminal_hsm is not None else None)
    net = NetworkSide(suite, hsm, host=listen[0], port=listen[1], issuer=issuer)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(net.serve)
        print(f"payswitch-certify listening network={suite.network} host={listen[0]} "
              f"port={port}: point the host's {suite.network} link here", flush=True)
        with trio.fail_after(SIGN_ON_WAIT_S):
            while not any(s.msg.mti == "0800" and s.answered for s in net.seen):
                await trio.sleep(0.05)
        result = await run_acquirer_suite(suite, net, target, terminal_hsm, cases)
        nursery.cancel_scope.cancel()
    return result
