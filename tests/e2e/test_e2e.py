"""Terminal -> payswitch -> network simulator -> payswitch -> terminal, all real:
loopback sockets, PostgreSQL, `payswitch serve` as a process, both simulators."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import trio

from payswitch.codecs.iso8583 import get
from payswitch.simulators import cards
from payswitch.simulators.certify import Context, run_scenarios
from payswitch.simulators.terminal import Terminal
from payswitch.switch.channel import Channel, ChannelLimits

ISO = get("iso87ascii")


def exchange(host: str, port: int, payload: bytes, timeout_s: float = 10) -> bytes:
    """Send one len2 frame as a terminal, return the payload of the first frame back."""
    async def run() -> bytes:
        with trio.fail_after(timeout_s):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                channel = Channel(stream, ChannelLimits("len2", 8192))
                await channel.send_frame(payload)
                return (await channel.receive_frame()).payload
    return trio.run(run)


def wait_for(predicate, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def issuer_request(sim, pan: str, amount_minor: int):
    """The latest authorization the simulator received for this card and amount (the
    switch puts its own STAN on it), as (raw bytes, message)."""
    def find():
        for raw in reversed(list(sim.received)):
            try:
                msg = sim.dialect.decode(raw)
            except Exception:
                continue
            if (msg.mti in ("0100", "0200") and msg.pan == pan
                    and msg.amount_minor == amount_minor):
                return raw, msg
        return None
    return wait_for(find)


def test_visa_round_trip_bytes(topology):
    term = Terminal("DEMO0001", seed=11)
    c = cards.card("visa_approve")
    req = term.purchase(c, 4321, chip=True)
    back = exchange(topology.host, topology.port, ISO.encode(req))

    # What the terminal got back: ISO 8583:1987 all ASCII, hex-ASCII bitmap.
    assert back[:4] == b"0210"
    assert all(ch in b"0123456789ABCDEF" for ch in back[4:20])
    resp = ISO.decode(back)
    assert (resp.response_code, resp.stan, resp.terminal_id) == ("00", req.stan, "DEMO0001")
    assert resp.amount_minor == 4321 and len(resp.auth_code or "") == 6

    # What VisaNet (the simulator) got: BASE I header, BCD MTI, binary bitmap, BCD fields.
    raw, msg = issuer_request(topology.visa, c.pan, 4321)
    assert raw[0] == 22 and raw[1] == 0x01  # H1 header length, H2 header format
    assert int.from_bytes(raw[3:5], "big") == len(raw)  # H4 total message length
    assert raw[22:24] == bytes.fromhex(msg.mti)  # MTI, 2 bytes BCD
    bitmap = raw[24:32]
    assert not all(32 <= b < 127 for b in bitmap)  # binary, not hex characters
    assert bitmap[0] & 0x40  # DE2 present
    assert bytes([16]) + bytes.fromhex(c.pan) in raw  # DE2: 1-byte length + BCD PAN
    assert bytes.fromhex("000000004321") in raw  # DE4, 6 bytes BCD
    assert c.pan.encode() not in raw  # no ASCII PAN on a BASE I link
    assert msg.amount_minor == 4321 and msg.pos_entry_mode == "051"
    # The auth code the issuer gave is the one the terminal got.
    sent = [topology.visa.dialect.decode(p) for p in list(topology.visa.sent)]
    assert resp.auth_code in {m.auth_code for m in sent if m.pan == c.pan}


def test_mastercard_round_trip_bytes(topology):
    term = Terminal("DEMO0002", seed=12)
    c = cards.card("mastercard_approve")
    req = term.purchase(c, 777, chip=False)
    back = exchange(topology.host, topology.port, ISO.encode(req))
    assert back[:4] == b"0210"
    resp = ISO.decode(back)
    assert (resp.response_code, resp.stan) == ("00", req.stan)

    raw, msg = issuer_request(topology.mastercard, c.pan, 777)
    assert raw[:4] == msg.mti.encode("cp500")  # EBCDIC digits F0..F9
    assert all(0xF0 <= b <= 0xF9 for b in raw[:4])
    assert not all(32 <= b < 127 for b in raw[4:12])  # binary bitmap
    assert ("16" + c.pan).encode("cp500") in raw  # DE2: EBCDIC LL + EBCDIC PAN
    assert f"{777:012d}".encode("cp500") in raw  # DE4
    assert c.pan.encode() not in raw
    assert msg.pos_entry_mode == "021"


@pytest.mark.parametrize("name,code", [("visa_decline", "05"),
                                       ("mastercard_insufficient_funds", "51"),
                                       ("unrouted", "15")])
def test_declines_pass_through(topology, name, code):
    # Unseeded: each case its own STAN, or the switch rightly replays the first answer.
    req = Terminal("DEMO0003").purchase(cards.card(name), 1000)
    resp = ISO.decode(exchange(topology.host, topology.port, ISO.encode(req)))
    assert resp.response_code == code


def test_certify_passes_against_payswitch(topology):
    ctx = Context(topology.host, topology.port, terminal_id="DEMO0004", timeout_s=10)
    results = trio.run(run_scenarios, ctx)
    failed = [r for r in results if not r["passed"]]
    assert not failed, failed


def test_certify_command_json(topology):
    out = subprocess.run(
        [sys.executable, "-m", "payswitch.lab.cli", "certify", "--host", topology.host,
         "--port", str(topology.port), "--terminal-id", "DEMO0005", "--json",
         "--scenario", "approval_visa", "--scenario", "echo_0800_301"],
        capture_output=True, text=True, timeout=60)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["passed"], report
    assert [s["scenario"] for s in report["scenarios"]] == ["approval_visa", "echo_0800_301"]


def test_demo_json():
    """The acceptance check of `make demo`, short: about 8 s, so not marked slow."""
    out = subprocess.run([sys.executable, "-m", "payswitch.lab.cli", "demo",
                          "--duration", "5", "--json"],
                         capture_output=True, text=True, timeout=180)
    report = json.loads(out.stdout)
    assert {"sent", "approved", "declined", "timeouts", "errors", "p50_ms",
            "p99_ms"} <= set(report)
    assert report["approved"] > 0 and report["errors"] == 0, (report, out.stderr[-2000:])
    assert out.returncode == 0
    for link in ("visa", "mastercard"):
        figures = report["links"][link]
        assert figures["switch"]["requests"] > 0
        assert figures["simulator_received_by_mti"].get("0200", 0) > 0
    # Real crypto: every PIN block translated (no 81), no MAC dropped on the Visa link,
    # and wrong-PIN cards declined 55 by the issuer's PVV check (~2.6% of the mix).
    assert report["pin_crypto_errors"] == 0 and report["by_code"].get("96", 0) == 0
    assert report["links"]["visa"]["simulator_mac_failures"] == 0
    if report["sent"] >= 300:
        assert report["pin_declines"] > 0, report["by_code"]
    # Issue 5's acceptance: the demo ends with `ledger verify` clean and balanced, and
    # every approval became a hold that clearing posted.
    assert report["ledger_balanced"] is True and report["ledger_verify_ok"] is True
    # Issue 11: the day ends with clearing files, the networks' settlement, a
    # reconciliation that finds exactly the faults injected on purpose, payouts, and
    # the ledger still clean.
    day = report["clearing_day"]
    assert set(day["files"]) == {"visa", "mastercard"}, day
    assert day["recon"]["counts"] == {"duplicate_presentment": 1, "rejected_by_network": 1,
                                      "amount_differs": 1, "authorized_never_presented": 1,
                                      "chargeback": 1}
    assert day["recon"]["totals"]["amount_differs"] == {"840": 137}
    assert any(m["paid"] > 0 for m in day["payouts"]["merchants"].values())
    assert day["ledger_verify_ok"] is True and day["ledger_balanced"] is True
    assert report["ledger"]["holds"] > 0
    assert report["ledger"]["posted_at_clearing"] == report["ledger"]["holds"]
    # Issue 8: the switch's outbox relay ran in `payswitch serve`: its events reached
    # the broker (the clearing run's, written after the switch stopped, are not yet).
    led = report["ledger"]
    assert led["events_published"] > 0
    assert led["events_published"] + led["outbox_unsent"] == led["events"]
    # The switch's rate counts the fraud feed's authorizations too; the shadow line
    # says why the load's few replayed cards would be declined.
    assert report["switch_authorizations"] == report["sent"] + report["feed_sent"]
    assert report["feed_sent"] > 0
    shadow = report["risk"]["load_shadow"]
    assert shadow["would_decline"] == 0 or shadow["top_reasons"], shadow


def test_timeout_gives_91_and_the_issuer_gets_a_0420(topology):
    before = len(topology.visa.requests("0420", "0421"))
    req = Terminal("DEMO0006").purchase(cards.card("visa_no_answer"), 999)
    resp = ISO.decode(exchange(topology.host, topology.port, ISO.encode(req)))
    assert resp.response_code == "91" and resp.stan == req.stan
    reversals = wait_for(lambda: topology.visa.requests("0420", "0421")[before:], 10)
    assert reversals[0].original_data and reversals[0].amount_minor == 999


def test_network_link_drop_then_reconnect_and_sign_on(topology):
    sim, thread = topology.mastercard, topology.threads["mastercard"]
    connections, signons = sim.stats.connections, len(sim.requests("0800"))
    thread.call(sim.drop_links)
    wait_for(lambda: sim.stats.connections > connections and len(
        [m for m in sim.requests("0800") if m.network_code == "001"]) > 0
        and len(sim.requests("0800")) > signons, 10)
    # The sign-on was seen at the simulator; its 0810 may still be on the way back, and
    # until then the switch rightly refuses traffic on that link: allow some tries
    # (about 10 s: the reconnect backoff and a loaded machine).
    term = Terminal("DEMO0007")
    codes = []
    for _ in range(50):
        req = term.purchase(cards.card("mastercard_approve"), 4242)
        codes.append(ISO.decode(exchange(topology.host, topology.port,
                                         ISO.encode(req))).response_code)
        if codes[-1] == "00":
            break
        time.sleep(0.2)
    assert codes[-1] == "00", codes


def test_certify_over_tpdu_framing(pg_admin_dsn, tmp_path):
    import contextlib
    import os

    from payswitch.lab import realparts
    from payswitch.lab.demo import demo_config, start_switch

    from .conftest import ISSUER_TIMEOUT_MS, start_sims

    with realparts.scratch_database(pg_admin_dsn) as dsn, contextlib.ExitStack() as stack:
        threads = start_sims(stack)
        config = os.path.join(tmp_path, "tpdu.toml")
        with open(config, "w") as f:
            f.write(demo_config(threads["visa"].sim.port, threads["mastercard"].sim.port,
                                framing="tpdu", issuer_timeout_ms=ISSUER_TIMEOUT_MS))
        _, listeners = start_switch(stack, config, str(tmp_path), dsn)
        host, port = listeners["pos"]
        ctx = Context(host, port, framing="tpdu", timeout_s=15)
        names = ["approval_visa", "decline_05_do_not_honour", "echo_0800_301",
                 "malformed_30_link_up", "timeout_91"]
        results = trio.run(run_scenarios, ctx, names)
        assert all(r["passed"] for r in results), results


@pytest.mark.slow
def test_demo_with_faults_still_has_no_errors():
    out = subprocess.run([sys.executable, "-m", "payswitch.lab.cli", "demo",
                          "--duration", "10", "--faults", "--json"],
                         capture_output=True, text=True, timeout=240)
    report = json.loads(out.stdout)
    assert report["approved"] > 0 and report["errors"] == 0, (report, out.stderr[-2000:])
    assert report["links"]["visa"]["simulator_connections"] >= 2  # the link was dropped
    # The Visa range has stand-in (lab/riskdemo.py): while its link is down or its
    # breaker open, approvals go out as 0220 advices, each acknowledged, on the same
    # SAF counter as the reversals.
    advices = report["standin"]["advices"]
    assert set(advices) <= {"acked"} and advices.get("acked", 0) == report["standin"]["approved"]
    for name, link in report["links"].items():
        # Every reversal acknowledged, none left (timeouts also count lost 0420s).
        assert link["switch"]["saf_pending"] == 0
        reversals = link["switch"]["saf_acknowledged"] - (
            advices.get("acked", 0) if name == "visa" else 0)
        assert 0 < reversals <= link["switch"]["timeouts"]
    assert out.returncode == 0


@pytest.mark.parametrize("network", ["visa", "mastercard"])
def test_atm_withdrawal_pin_block_reaches_the_issuer_as_8_binary_bytes(topology, network):
    term = Terminal("DEMO0008")
    c = cards.card(f"{network}_approve_2")
    req = term.withdrawal(c, 6000)
    resp = ISO.decode(exchange(topology.host, topology.port, ISO.encode(req)))
    assert (resp.response_code, resp.processing_code) == ("00", "011000")
    # On the terminal side DE52 is 16 hex characters; on the network side 8 raw bytes.
    assert req.pin_block.hex().upper().encode() in ISO.encode(req)
    sim = getattr(topology, network)
    raw, msg = issuer_request(sim, c.pan, 6000)
    assert msg.pin_block == req.pin_block and req.pin_block in raw
    assert req.pin_block.hex().upper().encode() not in raw
