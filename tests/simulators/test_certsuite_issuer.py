"""issuer-host role over sockets: the project's issuer simulators (the "bank's
host" here) pass the shipped issuer-host suite of each network, with real PIN blocks,
CVVs, ARQCs and, on Visa, link MACs; a deliberately faulty host fails exactly the
cases it should, each with the broken rule named."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio
from certsuite_faulty import Faults, FaultyIssuerHost

from payswitch.codecs.iso8583 import Message
from payswitch.hsm import devkeys
from payswitch.simulators.cards import card
from payswitch.simulators.certsuite import wire
from payswitch.simulators.certsuite.issuer_host import (
    run_issuer_suite,
    run_issuer_suite_listening,
)
from payswitch.simulators.certsuite.report import junit_xml, write_reports
from payswitch.simulators.certsuite.suite import shipped
from payswitch.simulators.issuer import Issuer
from payswitch.simulators.network import NetworkSimulator


@pytest.fixture(scope="module")
def keys(issuer_hsm):
    devkeys.load_issuer_keys(issuer_hsm)
    return issuer_hsm


def run_against(sim: NetworkSimulator, suite, hsm, cases=None):
    async def main():
        async with trio.open_nursery() as nursery:
            port = await nursery.start(sim.serve)
            result = await run_issuer_suite(suite, "127.0.0.1", port, hsm, cases)
            nursery.cancel_scope.cancel()
        return result
    return trio.run(main)


@pytest.mark.parametrize("network", ["visa", "mastercard", "iso87ascii"])
def test_issuer_simulator_passes_its_suite(keys, network, tmp_path):
    suite = shipped()[f"{network}-issuer-host"]
    sim = NetworkSimulator(network, hsm=keys, mac=suite.mac)
    result = run_against(sim, suite, keys)
    failed = {c.name: [str(v) for v in c.violations] for c in result.cases if not c.passed}
    assert failed == {}
    assert result.passed and len(result.cases) == len(suite.cases)
    assert sim.stats.mac_failures == 0
    paths = write_reports(result, str(tmp_path))
    text = Path(paths["messages"]).read_text()
    assert card("visa_approve").pan not in text and card("mastercard_approve").pan not in text
    chip = json.loads(text)["cases"][2]
    assert chip["name"] == "purchase_chip_approved"
    assert [(m["direction"], m["mti"]) for m in chip["messages"]] == [
        ("network->host", "0200"), ("host->network", "0210")]
    assert chip["messages"][0]["fields"]["DE2"].count("*") == 6


def test_faulty_issuer_host_fails_exactly_its_faulty_cases(keys, tmp_path):
    suite = shipped()["visa-issuer-host"]
    assert suite.mac
    # The slow case gets a short limit, so the test does not wait the network's 5 s.
    cases = tuple(dataclasses.replace(c, time_limit_ms=300)
                  if c.name == "cash_withdrawal_approved" else c for c in suite.cases)
    suite = dataclasses.replace(suite, cases=cases)
    faults = Faults(wrong_de39={1000}, changed_de4={500}, no_de38={4200}, bad_arpc={2599},
                    bad_mac_pc={"311000"}, slow={4000: 0.45})
    host = FaultyIssuerHost("visa", keys, True, faults)

    async def main():
        async with trio.open_nursery() as nursery:
            port = await nursery.start(host.serve)
            result = await run_issuer_suite(suite, "127.0.0.1", port, keys)
            nursery.cancel_scope.cancel()
        return result
    result = trio.run(main)
    broken = {c.name: sorted({(v.rule, v.field) for v in c.violations})
              for c in result.cases if not c.passed}
    # amount 1000 is shared by several decline cases: each answered 51 instead
    assert broken == {
        "purchase_chip_approved": [("arpc", "DE55.91")],
        "keyed_cvv2_approved": [("de38_on_approval", "DE38")],
        "cash_withdrawal_approved": [("time_limit", "response time")],
        "balance_inquiry": [("mac", "DE64/DE128")],
        "refund": [("echoed_fields", "DE4")],
        "decline_05": [("de39_allowed", "DE39")],
        "decline_54_expired": [("de39_allowed", "DE39")],
        "decline_82_bad_cvv": [("de39_allowed", "DE39")],
        "decline_n7_bad_cvv2": [("de39_allowed", "DE39")],
        "decline_82_bad_arqc": [("de39_allowed", "DE39")],
        "decline_14_invalid_card": [("de39_allowed", "DE39")],
    }
    assert not result.passed
    refund = next(c for c in result.cases if c.name == "refund")
    assert str(refund.violations[0]) == "echoed_fields: DE4 expected 500, got 501"
    xml = junit_xml(result)
    root = ET.fromstring(xml)
    suite_el = root.find("testsuite")
    assert suite_el.get("failures") == str(len(broken))
    failed = {tc.get("name") for tc in suite_el.iter("testcase")
              if tc.find("failure") is not None}
    assert failed == set(broken)


def test_listen_mode_for_an_issuer_host_that_dials_the_network(keys):
    """The host connects to the certifier (and signs on itself); the suite runs over
    that connection: the issuer simulator's decisions served on a dialled link."""
    suite = shipped()["mastercard-issuer-host"]
    issuer = Issuer(hsm=keys)
    signed_on = []

    async def serve_issuer(link, msg, payload, at_s):
        resp = issuer.respond(msg)
        if resp is not None:
            await link.send(resp)

    async def main():
        results = []

        async def certifier(task_status=trio.TASK_STATUS_IGNORED):
            results.append(await run_issuer_suite_listening(
                suite, "127.0.0.1", 0, keys, task_status=task_status))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(certifier)
                async with wire.dial("127.0.0.1", port, wire.Codec("mastercard"),
                                     on_request=serve_issuer) as link:
                    resp, _, _ = await link.request(Message(
                        mti="0800", stan="000001", network_code="001",
                        transmission_time="1128100000"), 5)
                    signed_on.append(resp.response_code)
                    while not results:
                        await trio.sleep(0.05)
        return results[0]
    result = trio.run(main)
    assert signed_on == ["00"]
    failed = {c.name: [str(v) for v in c.violations] for c in result.cases if not c.passed}
    assert failed == {} and len(result.cases) == len(suite.cases)
    assert result.target.startswith("listening on 127.0.0.1:")
