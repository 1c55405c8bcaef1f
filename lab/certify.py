"""payswitch itself as the acquirer host under certification: its issuer links dial
the certifier's network side (``simulators/certsuite/acquirer_host.py``) in the
suite's dialect and framing, and the suite's cases are driven through its terminal
port. Used by the tests and by ``payswitch certify --role acquirer-host --self``.
"""

from __future__ import annotations

import contextlib
import os

import trio

from payswitch.lab.demo import demo_config, start_switch
from payswitch.lab.realparts import free_port
from payswitch.simulators.certsuite import wire
from payswitch.simulators.certsuite.acquirer_host import NetworkSide, run_acquirer_suite
from payswitch.simulators.certsuite.report import SuiteResult
from payswitch.simulators.certsuite.suite import Suite

SIGN_ON_WAIT_S = 20.0  # the switch's links sign on within this, or the run stops


def switch_config(suite: Suite, port: int, echo_interval_ms: int = 1000,
                  hsm_token: str | None = None) -> str:
    """The demo's config with the link that carries the suite's cards dialling
    ``port`` in the suite's network dialect and framing (MACed when the suite is).
    The other link dials a closed port: it stays down and sends nothing."""
    dialect, framing = wire.WIRE[suite.network]
    link = "mastercard" if suite.network == "mastercard" else "visa"
    closed = free_port()
    text = demo_config(port if link == "visa" else closed,
                       port if link == "mastercard" else closed,
                       issuer_timeout_ms=suite.host_timeout_ms,
                       echo_interval_ms=echo_interval_ms, hsm_token=hsm_token,
                       mac_links=(link,) if suite.mac else ())
    out = []
    in_link = False
    for line in text.splitlines():
        if line.startswith("[["):
            in_link = line == "[[links]]"
        if in_link and line.startswith("dialect = "):
            line = f'dialect = "{dialect}"'
        if in_link and line.startswith("framing = "):
            line = f'framing = "{framing}"'
        out.append(line)
    return "\n".join(out) + "\n"


async def _signed_on(net: NetworkSide) -> None:
    with trio.fail_after(SIGN_ON_WAIT_S):
        while not any(s.msg.mti == "0800" and s.answered for s in net.seen):
            await trio.sleep(0.05)


def certify_payswitch(suite: Suite, work_dir: str, dsn: str,
                      case_names: list[str] | None = None, *, switch_token=None,
                      network_hsm=None, terminal_hsm=None) -> SuiteResult:
    """Start `payswitch serve` (its config in ``work_dir``) against the network side
    and run ``suite``; everything is stopped on return.

    With HSMs (as the demo): ``switch_token`` (a TokenConfig with the switch keys) for
    the switch process, ``network_hsm`` (issuer keys: PIN, CVV, ARQC checks, MAC) for
    the network side, ``terminal_hsm`` (terminal keys) for the driven terminal."""
    env = None
    if switch_token is not None:
        env = {"SOFTHSM2_CONF": switch_token.conf, "PAYSWITCH_HSM_PIN": switch_token.pin}

    async def main() -> SuiteResult:
        net = NetworkSide(suite, network_hsm)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(net.serve)
            with contextlib.ExitStack() as stack:
                path = os.path.join(work_dir, "payswitch-certify.toml")
                with open(path, "w") as f:
                    f.write(switch_config(suite, port, hsm_token=switch_token and
                                          switch_token.label))
                _, listeners = await trio.to_thread.run_sync(
                    start_switch, stack, path, work_dir, dsn, env)
                await _signed_on(net)
                result = await run_acquirer_suite(suite, net, listeners["pos"],
                                                  terminal_hsm, case_names)
                await trio.to_thread.run_sync(stack.close)
            nursery.cancel_scope.cancel()
        return result
    return trio.run(main)
