"""Authorization flows through the switch with a scripted issuer, real sockets and PG."""

from __future__ import annotations

import psycopg
import trio
from conftest import (
    DIALECT,
    PAN,
    FakeIssuer,
    Terminal,
    approve,
    config_dict,
    purchase,
    running_switch,
    trio_test,
)

from payswitch.codecs.iso8583 import Message


@trio_test
async def test_approval_round_trip(dsn):
    issuer = FakeIssuer()
    async with trio.open_nursery() as n:
        await n.start(issuer.serve)
        async with running_switch(config_dict(dsn, issuer.port)) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            await term.send(purchase())
            raw = await term.recv_raw()
            await term.aclose()
        n.cancel_scope.cancel()

    # What the issuer received: the purchase, re-stamped by the switch.
    (got,) = issuer.traffic()
    assert issuer.received[0].network_code == "001"  # sign-on came first
    assert got.mti == "0200" and got.pan == PAN and got.amount_minor == 1250
    assert got.terminal_id == "TERM0001" and got.processing_code == "000000"
    assert got.stan != "000001" or got.rrn  # the switch's own STAN space
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
async def test_decline_passes_through_and_is_journalled_masked(dsn):
    issuer = FakeIssuer(lambda m: approve(m).replace(response_code="51", auth_code=None))
    async with trio.open_nursery() as n:
        await n.start(issuer.serve)
        async with running_switch(config_dict(dsn, issuer.port)) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            resp = await term.request(purchase(processing="010000"))
            await term.aclose()
        n.cancel_scope.cancel()
    assert resp.response_code == "51"
    with psycopg.connect(dsn) as conn:
        dump = str(conn.execute("select * from switch_journal").fetchall())
        dump += str(conn.execute("select * from switch_dedup").fetchall())
    assert "476173******0010" in dump
    assert PAN not in dump


@trio_test
async def test_unknown_bin_gets_15_without_reaching_issuer(dsn):
    issuer = FakeIssuer()
    async with trio.open_nursery() as n:
        await n.start(issuer.serve)
        async with running_switch(config_dict(dsn, issuer.port)) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            resp = await term.request(purchase(pan="5100000000000008"))
            await term.aclose()
        n.cancel_scope.cancel()
    assert resp.response_code == "15"
    assert issuer.traffic() == []


@trio_test
async def test_unsupported_processing_code_gets_12(dsn):
    issuer = FakeIssuer()
    async with trio.open_nursery() as n:
        await n.start(issuer.serve)
        async with running_switch(config_dict(dsn, issuer.port)) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            resp = await term.request(purchase(processing="990000"))
            await term.aclose()
        n.cancel_scope.cancel()
    assert resp.response_code == "12"
    assert issuer.traffic() == []


@trio_test
async def test_terminal_echo_answered_locally(dsn):
    issuer = FakeIssuer()
    async with trio.open_nursery() as n:
        await n.start(issuer.serve)
        async with running_switch(config_dict(dsn, issuer.port)) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            resp = await term.request(Message(mti="0800", transmission_time="1125120000",
                                              stan="000077", network_code="301"))
            await term.aclose()
        n.cancel_scope.cancel()
    assert (resp.mti, resp.stan, resp.response_code, resp.network_code) == (
        "0810", "000077", "00", "301")
    assert issuer.traffic() == []
