"""Authorization flows through the switch with a scripted issuer, real sockets and PG."""

from __future__ import annotations

import io

import psycopg
import trio
from switchkit import (
    DIALECT,
    PAN,
    FakeIssuer,
    Terminal,
    approve,
    config_dict,
    purchase,
    running_switch,
    serving,
    trio_test,
)

from payswitch.codecs.iso8583 import Message
from payswitch.switch import logs


@trio_test
async def test_approval_round_trip(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        await term.send(purchase())
        raw = await term.recv_raw()
        await term.aclose()
        history = await sw.store.history("T:TERM0001|0200|000001|1125120000|1250")

    # What the issuer received: the purchase, re-stamped by the switch.
    (got,) = issuer.traffic()
    assert issuer.received[0].network_code == "001"  # sign-on came first
    assert got.mti == "0200" and got.pan == PAN and got.amount_minor == 1250
    assert got.terminal_id == "TERM0001" and got.processing_code == "000000"
    # The switch's own STAN space: the STAN it journalled for the issuer, not the
    # terminal's (the terminal gets its own back, below).
    assert [r["stan"] for r in history if r["event"] == "issuer_request"] == [got.stan]
    assert [r["stan"] for r in history if r["event"] == "request"] == ["000001"]
    assert got.rrn and len(got.rrn) == 12
    assert got.acquirer_id == "999999"
    assert DIALECT.decode(issuer.raw[issuer.received.index(got)]) == got
    assert issuer.received[-1].network_code == "002"  # signed off at stop

    # What the terminal got back: its own STAN/DE7, the issuer's answer, the switch RRN.
    resp = DIALECT.decode(raw)
    expected = Message(mti="0210", pan=PAN, processing_code="000000", amount_minor=1250,
                       transmission_time="1125120000", stan="000001", local_time="120000",
                       local_date="1125", rrn=got.rrn, auth_code="A1B2C3",
                       response_code="00", terminal_id="TERM0001",
                       merchant_id="MERCHANT0000001", currency="978")
    assert raw == DIALECT.encode(expected)
    assert resp.response_code == "00"


@trio_test
async def test_decline_passes_through_and_nothing_secret_is_stored_or_logged(dsn):
    issuer = FakeIssuer(lambda m: approve(m).replace(response_code="51", auth_code=None))
    secret = purchase(processing="010000").replace(
        track2=PAN + "=27122011234599999", pin_block=bytes.fromhex("0412AC89BCDEF012"),
        emv=bytes.fromhex("9F2608C2C12B098F3DA6E3"))
    logged = io.StringIO()
    logs.setup("DEBUG", logged)
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        resp = await term.request(secret)
        await term.aclose()
    assert resp.response_code == "51"
    (got,) = issuer.traffic()
    assert got.track2 == secret.track2 and got.pin_block == secret.pin_block  # passed on
    with psycopg.connect(dsn) as conn:
        dump = str(conn.execute("select * from switch_journal").fetchall())
        dump += str(conn.execute("select * from switch_dedup").fetchall())
    out = logged.getvalue()
    assert "476173******0010" in dump and "476173******0010" in out
    for text in (dump, out):
        assert PAN not in text
        assert "27122011234599999" not in text
        assert "0412AC89BCDEF012" not in text.upper() and "9F2608C2" not in text.upper()


@trio_test
async def test_unknown_bin_gets_15_without_reaching_issuer(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        resp = await term.request(purchase(pan="5100000000000008"))
        await term.aclose()
    assert resp.response_code == "15"
    assert issuer.traffic() == []


@trio_test
async def test_unsupported_processing_code_gets_12(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        resp = await term.request(purchase(processing="990000"))
        await term.aclose()
    assert resp.response_code == "12"
    assert issuer.traffic() == []


@trio_test
async def test_terminal_echo_answered_locally(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        echo = Message(mti="0800", transmission_time="1125120000", stan="000077",
                       network_code="301", terminal_id="TERM0001")
        resp = await term.request(echo)
        # A terminal that is not configured (or none in DE41) is not told 00.
        unknown = await term.request(echo.replace(terminal_id="NOSUCH01", stan="000078"))
        anonymous = await term.request(echo.replace(terminal_id=None, stan="000079"))
        await term.aclose()
    assert (resp.mti, resp.stan, resp.response_code, resp.network_code) == (
        "0810", "000077", "00", "301")
    assert (unknown.mti, unknown.response_code) == ("0810", "58")
    assert anonymous.response_code == "58"
    assert issuer.traffic() == []


@trio_test
async def test_visa_link_speaks_base1_over_vap_framing(dsn):
    issuer = FakeIssuer(dialect="visa", framing="vap")
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port, dialect="visa", framing="vap")
        async with running_switch(cfg) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            resp = await term.request(purchase())
            await term.aclose()
    (got,) = issuer.traffic("0200")
    raw = issuer.raw[issuer.received.index(got)]
    assert raw[0] == 22  # BASE I header length, then binary MTI in BCD
    assert raw[22:24] == b"\x02\x00"
    assert got.pan == PAN and got.amount_minor == 1250
    assert resp.response_code == "00" and resp.auth_code == "A1B2C3"


@trio_test
async def test_idle_link_sends_echo_and_unanswered_echo_drops_the_link(dsn):
    answer_echo = True
    issuer = FakeIssuer()
    original = issuer._frame

    async def frame(stream, payload):
        msg = DIALECT.decode(payload)
        if msg.network_code == "301" and not answer_echo:
            issuer.received.append(msg)
            return  # swallow the echo test
        await original(stream, payload)

    issuer._frame = frame
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port, echo_interval_ms=150, signon_timeout_ms=300)
        async with running_switch(cfg) as sw:
            echoes = lambda: [m for m in issuer.received if m.network_code == "301"]  # noqa: E731
            await issuer.wait_for(lambda: len(echoes()) >= 2, 3)
            assert issuer.connections == 1  # answered echoes keep the link
            answer_echo = False
            await issuer.wait_for(lambda: issuer.connections >= 2, 5)
            answer_echo = True
            await issuer.wait_for(lambda: sw.links["visa"].state == "signed_on", 5)


@trio_test
async def test_tpdu_terminal_gets_the_tpdu_swapped_in_the_reply(dsn):
    from payswitch.switch.channel import Channel, ChannelLimits

    issuer = FakeIssuer()
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port)
        cfg["listeners"][0]["framing"] = "tpdu"
        async with running_switch(cfg) as sw:
            stream = await trio.open_tcp_stream("127.0.0.1", sw.ports["pos"])
            channel = Channel(stream, ChannelLimits("tpdu", 8192))
            tpdu = b"\x60\x00\x01\x00\x02"
            await channel.send_frame(DIALECT.encode(purchase()), tpdu)
            with trio.fail_after(5):
                frames = [await channel.receive_frame()]
            await stream.aclose()
    assert frames[0].tpdu == b"\x60\x00\x02\x00\x01"
    assert DIALECT.decode(frames[0].payload).response_code == "00"


@trio_test
async def test_auth_cash_refund_and_balance_inquiry_by_processing_code(dsn):
    balance = "1001978C000000012345"  # DE54: account type, amount type, currency, amount

    def answer(m: Message) -> Message:
        resp = approve(m)
        return resp.replace(additional_amounts=balance) if m.processing_code[:2] == "31" else resp

    issuer = FakeIssuer(answer)
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        auth = await term.request(purchase(mti="0100", stan="000001"))
        cash = await term.request(purchase(stan="000002", processing="010000"))
        refund = await term.request(purchase(stan="000003", processing="200000"))
        inquiry = await term.request(purchase(stan="000004", processing="310000", amount=0))
        await term.aclose()
    assert (auth.mti, auth.response_code) == ("0110", "00")
    assert [r.response_code for r in (cash, refund, inquiry)] == ["00", "00", "00"]
    assert inquiry.additional_amounts == balance
    assert [m.processing_code for m in issuer.traffic()] == [
        "000000", "010000", "200000", "310000"]
    assert [m.mti for m in issuer.traffic()] == ["0100", "0200", "0200", "0200"]
