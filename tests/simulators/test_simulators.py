"""Network simulator, terminal and load generator over real loopback sockets."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
import trio

from payswitch.codecs.iso8583 import Message, get
from payswitch.codecs.pan import luhn_ok
from payswitch.simulators import cards
from payswitch.simulators.certify import Context, run_scenarios
from payswitch.simulators.issuer import Issuer
from payswitch.simulators.load import LoadConfig, run_load
from payswitch.simulators.network import Faults, NetworkSimulator
from payswitch.simulators.terminal import Terminal, open_link, percentile
from payswitch.switch.channel import Channel, ChannelLimits

ISO = get("iso87ascii")


def test_card_table_is_luhn_valid_and_schemes_match_bins():
    for c in cards.CARDS:
        assert luhn_ok(c.pan), c.name
        if c.name.startswith("visa"):
            assert c.network == "visa" and c.pan[0] == "4"
        elif c.name.startswith("mastercard"):
            assert c.network == "mastercard"
        else:
            assert c.network is None
    assert cards.network_of("2720990000000000") == "mastercard"
    assert cards.network_of("2721000000000000") is None
    assert len({c.pan for c in cards.CARDS}) == len(cards.CARDS)


def test_track2_round_trip():
    c = cards.card("visa_approve")
    assert cards.parse_track2(c.track2) == (c.pan, c.expiry, "201")
    assert cards.parse_track2("garbage") is None


@pytest.mark.parametrize("name,expected", [
    ("visa_approve", "00"), ("visa_decline", "05"), ("visa_insufficient_funds", "51"),
    ("visa_expired", "54"), ("visa_wrong_pin", "55"), ("visa_invalid_card", "14"),
    ("mastercard_approve", "00"), ("mastercard_2series_approve", "00"),
    ("visa_no_answer", None),
])
def test_issuer_rules(name, expected):
    term = Terminal("DEMO0001", seed=1)
    resp = Issuer(seed=1).respond(term.purchase(cards.card(name), 1000))
    if expected is None:
        assert resp is None
        return
    assert resp.mti == "0210" and resp.response_code == expected
    assert bool(resp.auth_code) == (expected == "00")


def test_issuer_checks_expiry_date_and_balance_not_labels():
    term = Terminal("DEMO0001", seed=1)
    issuer = Issuer(today=dt.date(2040, 1, 1))  # every card has expired by then
    assert issuer.respond(term.purchase(cards.card("visa_approve"), 1)).response_code == "54"
    issuer = Issuer()
    big = term.purchase(cards.card("visa_approve"), 10_000_001)
    assert issuer.respond(big).response_code == "51"
    unknown = term.purchase(cards.card("visa_approve"), 100)
    unknown.pan = cards.with_luhn("476173999999999")
    unknown.track2 = None
    assert issuer.respond(unknown).response_code == "14"
    unknown.pan = "4761730000000000"  # not Luhn-valid
    assert issuer.respond(unknown).response_code == "14"


def test_issuer_network_management_and_reversals():
    issuer = Issuer()
    for code in ("001", "301", "002"):
        resp = issuer.respond(Message(mti="0800", stan="000001", network_code=code,
                                      transmission_time="1125101010"))
        assert (resp.mti, resp.response_code, resp.network_code) == ("0810", "00", code)
    term = Terminal("DEMO0001", seed=1)
    req = term.purchase(cards.card("visa_approve"), 500)
    for mti, want in (("0400", "0410"), ("0420", "0430")):
        resp = issuer.respond(req.replace(mti=mti))
        assert (resp.mti, resp.response_code, resp.stan) == (want, "00", req.stan)
    assert issuer.respond(req.replace(mti="0210", response_code="00")) is None


def run_with_sim(sim: NetworkSimulator, body):
    async def main():
        async with trio.open_nursery() as nursery:
            port = await nursery.start(sim.serve)
            with trio.fail_after(30):
                result = await body(port)
            nursery.cancel_scope.cancel()
        return result
    return trio.run(main)


def test_simulator_answers_over_tcp_and_records_bytes():
    sim = NetworkSimulator("iso87ascii", seed=1)
    term = Terminal("DEMO0001", seed=2)
    req = term.purchase(cards.card("visa_approve"), 4321)

    async def body(port):
        async with open_link("127.0.0.1", port) as link:
            signon = await link.request(Message(mti="0800", stan="000001", network_code="001",
                                                transmission_time="1125101010"), 5)
            auth = await link.request(req, 5)
            silent = await link.request(term.purchase(cards.card("visa_no_answer"), 1), 0.3)
        return signon, auth, silent

    signon, auth, silent = run_with_sim(sim, body)
    assert signon.response.mti == "0810" and signon.response.response_code == "00"
    assert auth.response.response_code == "00" and len(auth.response.auth_code) == 6
    assert auth.response.stan == req.stan and auth.response.rrn == req.rrn
    assert silent.response is None and silent.error is None
    assert sim.received[1] == ISO.encode(req)
    assert [m.mti for m in sim.messages] == ["0800", "0200", "0200"]
    assert sim.stats.silent == 1


def test_simulator_tpdu_framing_swaps_tpdu():
    sim = NetworkSimulator("iso87ascii", framing="tpdu")
    term = Terminal("DEMO0001", seed=2)

    async def body(port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        channel = Channel(stream, ChannelLimits("tpdu", 8192))
        await channel.send_frame(ISO.encode(term.echo()), bytes.fromhex("6000120034"))
        frame = await channel.receive_frame()
        await stream.aclose()
        return frame

    frame = run_with_sim(sim, body)
    assert frame.tpdu == bytes.fromhex("6000340012")
    assert ISO.decode(frame.payload).mti == "0810"


def test_simulator_faults_latency_late_and_link_drop():
    sim = NetworkSimulator("iso87ascii", faults=Faults(latency_ms=50, late_rate=1.0,
                                                       late_ms=1000, link_drop_every=3))
    term = Terminal("DEMO0001", seed=3)
    c = cards.card("visa_approve")

    async def body(port):
        async with open_link("127.0.0.1", port) as link:
            late = await link.request(term.purchase(c, 1), 0.2)  # gives up before 1.05 s
            ok = await link.request(term.purchase(c, 1), 10)
            dropped = await link.request(term.purchase(c, 1), 10)  # 3rd: link closed
            return late, ok, dropped, link.unmatched

    late, ok, dropped, unmatched = run_with_sim(sim, body)
    assert late.response is None
    assert ok.response.response_code == "00" and ok.latency_s >= 1.05
    assert dropped.response is None and dropped.error == "link closed by the host"
    assert [m.mti for m in unmatched] == ["0210"]  # the late answer, after we gave up
    assert sim.stats.link_drops == 1 and sim.stats.late == 2


def test_load_closed_loop_and_fixed_rate_against_simulator():
    sim = NetworkSimulator("iso87ascii", seed=4)

    async def body(port):
        closed = await run_load(LoadConfig("127.0.0.1", port, profile="mixed", terminals=3,
                                           duration_s=1.0, cards="mixed", timeout_s=5,
                                           seed=5, progress=False))
        fixed = await run_load(LoadConfig("127.0.0.1", port, profile="atm", terminals=2,
                                          rate=100, duration_s=1.0, cards="approve",
                                          seed=6, progress=False))
        return closed, fixed

    closed, fixed = run_with_sim(sim, body)
    assert closed["sent"] > 20 and closed["approved"] > 0 and closed["declined"] > 0
    assert fixed["approved"] == fixed["sent"] and 80 <= fixed["sent"] <= 101
    assert fixed["errors"] == 0 and fixed["p99_ms"] >= fixed["p50_ms"] > 0
    atm = [m for m in sim.messages if m.processing_code in ("011000", "311000")]
    assert atm and all(m.pin_block and len(m.pin_block) == 8 for m in atm)
    assert {m.terminal_id for m in atm} == {"DEMO0001", "DEMO0002", "DEMO0003"}


def test_certify_against_bare_simulator_passes_what_an_issuer_can():
    sim = NetworkSimulator("iso87ascii")
    ctx_names = ["approval_visa", "approval_mastercard", "approval_atm_withdrawal",
                 "decline_05_do_not_honour", "decline_51_insufficient_funds",
                 "decline_54_expired_card", "decline_14_invalid_card", "echo_0800_301",
                 "malformed_30_link_up", "link_drop_reconnect"]

    async def body(port):
        ok = await run_scenarios(Context("127.0.0.1", port, timeout_s=10), ctx_names)
        # A bare issuer has no timeout handling: that scenario must fail, not hang.
        bad = await run_scenarios(Context("127.0.0.1", port, timeout_s=0.3), ["timeout_91"])
        return ok, bad

    ok, bad = run_with_sim(sim, body)
    assert all(r["passed"] for r in ok), ok
    assert not bad[0]["passed"]


def test_percentile():
    assert percentile([], 50) == 0.0
    values = [i / 100 for i in range(1, 101)]
    assert percentile(values, 50) == 0.5 and percentile(values, 99) == 0.99


def test_simulate_command_prints_ready_line_and_stops_on_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "payswitch.lab.cli", "simulate",
                             "--network", "iso87ascii"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("payswitch-sim ready network=iso87ascii")
        port = int(line.rsplit("port=", 1)[1])

        async def probe():
            async with open_link("127.0.0.1", port) as link:
                return await link.request(Terminal("DEMO0001").echo(), 5)

        assert trio.run(probe).response.response_code == "00"
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert json.loads(err.strip().splitlines()[-1])["by_mti"] == {"0800": 1}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("network,framing", [("visa", "vap"), ("mastercard", "len2")])
def test_network_simulators_speak_their_own_dialect(network, framing):
    dialect = get(network)
    sim = NetworkSimulator(network)
    assert (sim.dialect_name, sim.framing) == (network, framing)
    term = Terminal("DEMO0001", seed=7)
    req = term.purchase(cards.card(f"{network}_approve"), 1234)
    req.emv = None  # keep to the fields both dialects carry unchanged
    if network == "visa":
        from payswitch.codecs.iso8583.visa import VisaHeader
        req.header = VisaHeader(destination_id="000001", source_id="123456")

    async def body(port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        channel = Channel(stream, ChannelLimits(framing, 8192))
        await channel.send_frame(dialect.encode(req))
        frame = await channel.receive_frame()
        await stream.aclose()
        return dialect.decode(frame.payload)

    resp = run_with_sim(sim, body)
    assert (resp.mti, resp.response_code, resp.stan) == ("0210", "00", req.stan)
    assert sim.messages[0].pan == req.pan and sim.messages[0].track2 == req.track2
    if network == "visa":
        assert (resp.header.destination_id, resp.header.source_id) == ("123456", "000001")


def test_chip_purchase_carries_decodable_de55():
    from payswitch.codecs.tlv import decode_tlv, get_tag

    msg = Terminal("DEMO0001", seed=8).purchase(cards.card("visa_approve"), 2599)
    assert msg.pos_entry_mode == "051" and msg.card_sequence == "001"
    tags = [t.tag_hex for t in decode_tlv(msg.emv)]
    assert {"9F26", "9F27", "9F37", "9F02", "9A"} <= set(tags)
    assert get_tag(msg.emv, "9F02") == bytes.fromhex("000000002599")
    assert ISO.decode(ISO.encode(msg)).emv == msg.emv


def test_drop_rate_reads_but_never_answers():
    sim = NetworkSimulator("iso87ascii", faults=Faults(drop_rate=1.0))
    term = Terminal("DEMO0001", seed=9)

    async def body(port):
        async with open_link("127.0.0.1", port) as link:
            echo = await link.request(term.echo(), 2)  # network management is never dropped
            auth = await link.request(term.purchase(cards.card("visa_approve"), 1), 0.2)
        return echo, auth

    echo, auth = run_with_sim(sim, body)
    assert echo.response.response_code == "00"
    assert auth.response is None and sim.stats.dropped == 1


def test_load_and_certify_commands_against_a_simulator_process(tmp_path):
    import contextlib

    from payswitch.lab.demo import payswitch_argv, start_simulator

    with contextlib.ExitStack() as stack:
        _, port = start_simulator(stack, "iso87ascii", str(tmp_path))
        out = subprocess.run(payswitch_argv("load", "--port", str(port), "--duration", "1",
                                            "--terminals", "2", "--cards", "approve",
                                            "--profile", "pos", "--json"),
                             capture_output=True, text=True, timeout=60)
        report = json.loads(out.stdout)
        assert out.returncode == 0, out.stderr
        assert report["sent"] > 0 and report["approved"] == report["sent"]
        assert report["errors"] == 0 and set(report["by_network"]) <= {"visa", "mastercard"}
        # A bare issuer cannot time out for the terminal: certify must say so, exit 1.
        out = subprocess.run(payswitch_argv("certify", "--port", str(port), "--timeout", "0.5",
                                            "--scenario", "approval_visa",
                                            "--scenario", "timeout_91", "--json"),
                             capture_output=True, text=True, timeout=60)
        report = json.loads(out.stdout)
        assert out.returncode == 1 and not report["passed"]
        assert [s["passed"] for s in report["scenarios"]] == [True, False]
    listed = subprocess.run(payswitch_argv("certify", "--list"),
                            capture_output=True, text=True, timeout=60)
    assert "link_drop_reconnect" in listed.stdout.split()
    no_port = subprocess.run(payswitch_argv("certify"), capture_output=True, text=True,
                             timeout=60)
    assert no_port.returncode == 2 and "--port" in no_port.stderr


def test_simulator_records_are_bounded_and_answer_tasks_capped():
    sim = NetworkSimulator("iso87ascii", faults=Faults(latency_ms=150), record_limit=3,
                           max_tasks=2)
    term = Terminal("DEMO0001", seed=11)
    reqs = [term.purchase(cards.card("visa_approve"), 100 + i) for i in range(6)]
    results = []

    async def body(port):
        async with open_link("127.0.0.1", port) as link:
            start = trio.current_time()

            async def one(req):
                results.append(await link.request(req, 10))

            async with trio.open_nursery() as nursery:
                for req in reqs:
                    nursery.start_soon(one, req)
            return trio.current_time() - start

    elapsed = run_with_sim(sim, body)
    assert [r.response.response_code for r in results] == ["00"] * 6
    assert sim.stats.tasks_peak == 2  # never more than max_tasks answers pending
    assert elapsed >= 3 * 0.15 - 0.02  # 6 answers, 2 at a time, 150 ms each
    assert len(sim.received) == len(sim.messages) == len(sim.sent) == 3
    assert sim.stats.received == 6 and sim.stats.answered == 6
    assert {m.stan for m in sim.messages} <= {r.stan for r in reqs}


def test_issuer_applies_a_stand_in_advice_once_and_answers_0130():
    """A switch's stand-in approval (0120, DE39 00, DE90 = the original's identifiers)
    comes off the card's balance once; its repeat (0121) is acknowledged, not applied."""
    issuer = Issuer()
    card = cards.card("visa_approve")
    before = issuer.cards[card.pan].balance_minor
    req = Terminal("DEMO0001", seed=1).purchase(card, 700)
    advice = req.replace(mti="0120", response_code="00", auth_code="S00001",
                         original_data="0200" + req.stan + req.transmission_time + "0" * 22)
    for mti in ("0120", "0121"):
        resp = issuer.respond(advice.replace(mti=mti, stan="000777"))
        assert (resp.mti, resp.response_code) == (mti[:2] + "30", "00")
    assert issuer.cards[card.pan].balance_minor == before - 700
    other = advice.replace(original_data="0200" + "000999" + req.transmission_time + "0" * 22)
    issuer.respond(other)
    assert issuer.cards[card.pan].balance_minor == before - 1400
    declined = advice.replace(response_code="91", original_data="x" * 42)
    assert issuer.respond(declined).response_code == "00"
    assert issuer.cards[card.pan].balance_minor == before - 1400


def _handle_one_read(sim, data, monkeypatch):
    """``data`` arrives on one connection, then EOF; the bytes the simulator wrote back
    and the writes it made (each send_all)."""
    import socket

    from payswitch.simulators import network

    writes = []
    real_send_all = network.SocketConn.send_all

    async def counted(conn, data):
        writes.append(bytes(data))
        await real_send_all(conn, data)

    monkeypatch.setattr(network.SocketConn, "send_all", counted)

    async def main():
        ours, theirs = socket.socketpair()
        with ours:
            ours.sendall(data)
            ours.shutdown(socket.SHUT_WR)
            await sim._handle(trio.SocketStream(trio.socket.from_stdlib_socket(theirs)))
            ours.settimeout(5)
            got = b""
            while chunk := ours.recv(65536):
                got += chunk
        return got, writes
    return trio.run(main)


def _framed(msgs):
    from payswitch.codecs.framing import encode_frame
    return b"".join(encode_frame("len2", ISO.encode(m)) for m in msgs)


def _payloads(data):
    from payswitch.codecs.framing import FrameReader
    return [ISO.decode(f.payload) for f in FrameReader("len2", 8192).feed(data)]


def test_simulator_answers_all_frames_of_one_read_in_one_write(monkeypatch):
    term = Terminal("DEMO0001", seed=12)
    reqs = [term.purchase(cards.card("visa_approve"), 100 + i) for i in range(3)]
    reqs.append(term.purchase(cards.card("visa_decline"), 100))
    sim = NetworkSimulator("iso87ascii")
    got, writes = _handle_one_read(sim, _framed(reqs), monkeypatch)
    assert len(writes) == 1 and writes[0] == got
    answers = _payloads(got)
    assert [(a.mti, a.stan, a.response_code) for a in answers] == \
        [("0210", r.stan, "00") for r in reqs[:3]] + [("0210", reqs[3].stan, "05")]
    assert sim.stats.answered == 4 and sim.stats.by_code == {"00": 3, "05": 1}


def test_link_drop_answers_the_frames_before_the_nth_of_the_same_read(monkeypatch):
    term = Terminal("DEMO0001", seed=13)
    reqs = [term.purchase(cards.card("visa_approve"), 100 + i) for i in range(4)]
    sim = NetworkSimulator("iso87ascii", faults=Faults(link_drop_every=3))
    got, _ = _handle_one_read(sim, _framed(reqs), monkeypatch)
    answers = _payloads(got)
    assert [a.stan for a in answers] == [r.stan for r in reqs[:2]]
    assert sim.stats.link_drops == 1 and sim.stats.received == 3
