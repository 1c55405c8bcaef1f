"""acquirer-host role, end to end: `payswitch serve` (a process, real PostgreSQL)
dials the certifier as its network, in each network's dialect and framing, and passes
the shipped acquirer-host suite; a faulty acquirer host (reversals without DE90)
fails exactly the reversal cases."""

from __future__ import annotations

import sys

import pytest
import trio
from certsuite_faulty import FaultyAcquirerHost

from payswitch.hsm import devkeys
from payswitch.lab import realparts
from payswitch.lab.certify import certify_payswitch
from payswitch.lab.realparts import free_port
from payswitch.simulators.certsuite.acquirer_host import NetworkSide, run_acquirer_suite
from payswitch.simulators.certsuite.report import summary
from payswitch.simulators.certsuite.suite import shipped
from payswitch.simulators.issuer import Issuer


@pytest.fixture(scope="module")
def keys(hsm, issuer_hsm, terminal_hsm):
    """The demo's TEST keys on each side: switch, network (issuer), terminal."""
    devkeys.load_switch_keys(hsm)
    devkeys.load_issuer_keys(issuer_hsm)
    devkeys.load_terminal_keys(terminal_hsm)


@pytest.mark.parametrize("network", ["visa", "mastercard", "iso87ascii"])
def test_payswitch_passes_the_acquirer_host_suite(pg_admin_dsn, tmp_path, network, keys,
                                                  hsm_token, issuer_hsm, terminal_hsm):
    suite = shipped()[f"{network}-acquirer-host"]
    with realparts.scratch_database(pg_admin_dsn) as dsn:
        result = certify_payswitch(suite, str(tmp_path), dsn, switch_token=hsm_token,
                                   network_hsm=issuer_hsm, terminal_hsm=terminal_hsm)
    failed = {c.name: [str(v) for v in c.violations] for c in result.cases if not c.passed}
    assert failed == {}, summary(result)
    assert result.passed and len(result.cases) == len(suite.cases)
    # the per-case log: terminal request and answer, then both directions of the link
    def flow(name):
        case = next(c for c in result.cases if c.name == name)
        return [(m["direction"], m.get("mti")) for m in case.messages
                if not (m.get("mti") or "").startswith("08")]  # an echo may fall in
    assert flow("purchase_chip_approved") == [
        ("terminal->host", "0200"), ("host->terminal", "0210"),
        ("host->network", "0200"), ("network->host", "0210")]
    late = flow("late_answer_reversal")
    assert ("host->network", "0200") in late
    assert any(d == "host->network" and mti in ("0400", "0420") for d, mti in late)


def test_faulty_acquirer_host_fails_exactly_its_faulty_cases(issuer_hsm, keys):
    suite = shipped()["visa-acquirer-host"]
    assert suite.mac
    host = FaultyAcquirerHost("visa", issuer_hsm, True, timeout_s=suite.host_timeout_ms / 1000,
                              no_de90=True, bad_mac_pc=frozenset({"011000"}),
                              reuse_stan_amounts=frozenset({1002}))
    # the driven terminal has no keys: the network's issuer decides by the card labels
    net = NetworkSide(suite, issuer_hsm, issuer=Issuer())

    async def main():
        async with trio.open_nursery() as nursery:
            port = await nursery.start(net.serve)
            term_port = await nursery.start(host.run, port)
            await host.signed_on.wait()
            cases = [c.name for c in suite.cases if c.name != "echo_when_idle"]
            result = await run_acquirer_suite(suite, net, ("127.0.0.1", term_port),
                                              case_names=cases)
            nursery.cancel_scope.cancel()
        return result
    result = trio.run(main)
    broken = {c.name: sorted({(v.rule, v.field.split(" ")[0]) for v in c.violations})
              for c in result.cases if not c.passed}
    no_de90 = [("mandatory_fields", "DE90"), ("reversal_de90", "DE90")]
    assert broken == {
        # the network drops the badly MACed request: 91 to the terminal, a reversal
        "cash_withdrawal_approved": [("de39_allowed", "DE39"), ("mac", "DE64/DE128"),
                                     ("mandatory_fields", "DE90")],
        "decline_05_passed_on": [("stan_rrn_unique", "DE11")],
        "terminal_reversal": no_de90,
        "no_answer_reversal": no_de90,
        "late_answer_reversal": no_de90,
    }, summary(result)
    assert not result.passed


def test_the_command_against_an_acquirer_host_that_dials_it(tmp_path):
    """`payswitch certify --role acquirer-host` as a process: the host (no faults
    but no echo either) dials its --listen port; exit 0, the optional echo case WARNs."""
    net_port = free_port()
    host = FaultyAcquirerHost("mastercard", None, False, timeout_s=2.0)

    async def main():
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                term_port = await nursery.start(host.run, net_port)
                proc = await trio.run_process(
                    [sys.executable, "-m", "payswitch.lab.cli", "certify", "--role",
                     "acquirer-host", "--network", "mastercard", "--listen",
                     f"127.0.0.1:{net_port}", "--target", f"127.0.0.1:{term_port}",
                     "--report-dir", str(tmp_path)], capture_stdout=True,
                    capture_stderr=True, check=False)
                nursery.cancel_scope.cancel()
        return proc
    proc = trio.run(main)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert f"listening network=mastercard host=127.0.0.1 port={net_port}" in out
    assert "WARN  echo_when_idle" in out and "7/8 cases passed; 0 mandatory failed" in out
    assert (tmp_path / "junit.xml").exists()
