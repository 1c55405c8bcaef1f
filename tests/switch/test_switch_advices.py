"""Advices (0220), reversals (0400, 0420) from terminals, acquirer host links, metrics."""

from __future__ import annotations

import urllib.request

import psycopg
import trio
from switchkit import (
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
from payswitch.lab.realparts import free_port


def saf(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select mti, state from switch_saf order by id").fetchall()


@trio_test
async def test_advice_is_acked_after_durable_store_then_forwarded(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        ack = await term.request(purchase(mti="0220").replace(auth_code="OFF123"))
        await issuer.wait_for(lambda: saf(dsn) == [("0220", "acked")], 5)
        await term.aclose()
    assert (ack.mti, ack.response_code) == ("0230", "00")
    (fwd,) = issuer.traffic("022")
    assert fwd.mti == "0220" and fwd.amount_minor == 1250 and fwd.auth_code == "OFF123"
    assert fwd.terminal_id == "TERM0001"


@trio_test
async def test_reversal_0400_goes_to_the_issuer_of_the_original(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        ok = await term.request(purchase(stan="000010"))
        rev = await term.request(purchase(mti="0400", stan="000011").replace(
            original_data="0200" + "000010" + "1125120000" + "0" * 22))
        lost = await term.request(purchase(mti="0400", stan="000012").replace(
            original_data="0200" + "000999" + "1125120000" + "0" * 22))
        await term.aclose()
    assert ok.response_code == "00"
    assert (rev.mti, rev.response_code, rev.stan) == ("0410", "00", "000011")
    assert lost.response_code == "25"  # no such original
    (orig,) = issuer.traffic("0200")
    (out,) = issuer.traffic("040")
    assert out.original_data[:20] == "0200" + orig.stan + orig.transmission_time
    assert out.rrn == orig.rrn and out.stan != orig.stan


@trio_test
async def test_terminal_0420_acked_and_forwarded_once(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        await term.request(purchase(stan="000020"))
        advice = purchase(mti="0420", stan="000021").replace(
            original_data="0200" + "000020" + "1125120000" + "0" * 22)
        ack = await term.request(advice)
        again = await term.request(advice.replace(mti="0421"))  # repeat: same answer
        await issuer.wait_for(lambda: saf(dsn) == [("0420", "acked")], 5)
        await term.aclose()
    assert (ack.mti, ack.response_code) == ("0430", "00")
    assert again.response_code == "00"
    assert len(issuer.traffic("042")) == 1


@trio_test
async def test_acquirer_link_served_only_from_its_source_and_institution(dsn):
    issuer = FakeIssuer()
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port)
        cfg["listeners"].append({"name": "acq", "kind": "acquirer", "port": 0})
        cfg["acquirers"] = [{"id": "BANKA", "listener": "acq", "source": "127.0.0.1",
                             "institution_id": "123456"}]
        async with running_switch(cfg) as sw:
            host = await Terminal.connect(sw.ports["acq"])
            # Acquirer STANs are their own space: same STAN as a terminal's is not a dup.
            ok = await host.request(purchase().replace(acquirer_id="123456",
                                                       terminal_id="ANYTERM1"))
            wrong = await host.request(purchase(stan="000002").replace(acquirer_id="654321"))
            await host.aclose()
    assert ok.response_code == "00"
    assert issuer.traffic("0200")[0].acquirer_id == "123456"  # kept end to end
    assert wrong.response_code == "58"
    assert len(issuer.traffic("0200")) == 1


@trio_test
async def test_metrics_endpoint_counts_attempts_success_and_link_state(dsn):
    issuer = FakeIssuer()
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port)
        cfg["switch"]["metrics_port"] = free_port()
        async with running_switch(cfg) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            await term.request(purchase())
            await term.request(purchase(stan="000002", pan="6011000000000004"))
            await term.aclose()
            url = f"http://127.0.0.1:{sw.metrics_port}/metrics"
            body = await trio.to_thread.run_sync(
                lambda: urllib.request.urlopen(url, timeout=5).read().decode())  # noqa: S310
    assert 'payment_attempts_total{mti="0200"} 2.0' in body
    assert 'payment_success_total{mti="0200"} 1.0' in body
    assert 'payment_responses_total{mti="0200",response_code="15"} 1.0' in body
    assert "payment_processing_duration_seconds_bucket" in body
    assert 'link_state{link="visa"} 2.0' in body
    assert 'link_requests_total{link="visa",mti="0200"} 1.0' in body


@trio_test
async def test_unconfirmed_0400_becomes_a_0420_for_the_original_not_for_itself(dsn):
    issuer = FakeIssuer(lambda m: None if m.mti == "0400" else approve(m))
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        await term.request(purchase(stan="000030"))
        rev = await term.request(purchase(mti="0400", stan="000031").replace(
            original_data="0200" + "000030" + "1125120000" + "0" * 22))
        await issuer.wait_for(lambda: saf(dsn) == [("0420", "acked")], 5)
        await term.aclose()
    assert rev.response_code == "91"
    (orig,) = issuer.traffic("0200")
    (advice,) = issuer.traffic("042")
    assert advice.original_data[:20] == "0200" + orig.stan + orig.transmission_time


@trio_test
async def test_reversal_while_its_original_is_in_flight_waits_and_reaches_the_issuer(dsn):
    # The purchase is approved 0.5 s after it reached the issuer; its 0400 arrives
    # meanwhile. It must not be answered 00 with nothing sent (the approval would stand).
    issuer = FakeIssuer(lambda m: (0.5, approve(m)) if m.mti == "0200" else approve(m))
    async with serving(issuer) as port, running_switch(
            config_dict(dsn, port, request_timeout_ms=4000)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        await term.send(purchase(stan="000040"))
        await issuer.wait_for(lambda: issuer.traffic("0200"))
        await term.send(purchase(mti="0400", stan="000041").replace(
            original_data="0200" + "000040" + "1125120000" + "0" * 22))
        answers = {m.mti: m for m in [await term.recv(), await term.recv()]}
        await term.aclose()
    assert answers["0210"].response_code == "00"
    assert answers["0410"].response_code == "00"
    (orig,) = issuer.traffic("0200")
    (out,) = issuer.traffic("04")
    assert out.mti == "0400" and out.original_data[4:10] == orig.stan


@trio_test
async def test_an_original_is_reversed_once_whatever_the_reversals(dsn):
    # 0400, 0420 and another 0400 (new STANs, same DE90): one reversal reaches the
    # issuer; the later ones are answered 00 from the first and send nothing.
    issuer = FakeIssuer()
    od = "0200" + "000050" + "1125120000" + "0" * 22
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        assert (await term.request(purchase(stan="000050"))).response_code == "00"
        r1 = await term.request(purchase(mti="0400", stan="000051").replace(original_data=od))
        r2 = await term.request(purchase(mti="0420", stan="000052").replace(original_data=od))
        r3 = await term.request(purchase(mti="0400", stan="000053").replace(original_data=od))
        await trio.sleep(0.5)  # the SAF sender would have sent a 0420 by now
        await term.aclose()
    assert [r.response_code for r in (r1, r2, r3)] == ["00", "00", "00"]
    assert [m.mti for m in issuer.traffic("04")] == ["0400"]
    assert saf(dsn) == []
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select original_dup_key, reversal_dup_key"
                            " from switch_reversal").fetchall()
    assert rows == [("T:TERM0001|0200|000050|1125120000|1250",
                     "T:TERM0001|0400|000051|1125120000|1250")]


@trio_test
async def test_stored_reversals_of_one_original_queue_one_0420(dsn):
    issuer = FakeIssuer()
    od = "0200" + "000060" + "1125120000" + "0" * 22
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        await term.request(purchase(stan="000060"))
        a = await term.request(purchase(mti="0420", stan="000061").replace(original_data=od))
        b = await term.request(purchase(mti="0420", stan="000062").replace(original_data=od))
        await issuer.wait_for(lambda: saf(dsn) == [("0420", "acked")], 5)
        await trio.sleep(0.3)
        await term.aclose()
    assert (a.response_code, b.response_code) == ("00", "00")
    assert saf(dsn) == [("0420", "acked")]  # one 0420 (resent as 0421 if it timed out)
    (orig,) = issuer.traffic("0200")
    assert {m.original_data[4:10] for m in issuer.traffic("042")} == {orig.stan}


@trio_test
async def test_approvals_with_codes_08_10_11_are_reversed_too(dsn):
    # 10 (partial approval), 08 (honour with identification), 11 (VIP approval) hold
    # funds as 00 does: their reversals must reach the issuer.
    codes = {"000071": "10", "000073": "08", "000075": "11"}

    def answer(m: Message) -> Message:
        code = codes.get(m.additional_data or "", "00") if m.mti == "0200" else "00"
        return approve(m).replace(response_code=code)

    issuer = FakeIssuer(answer)
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        for stan in codes:
            ok = await term.request(purchase(stan=stan).replace(additional_data=stan))
            assert ok.response_code == codes[stan]
            rev = await term.request(purchase(mti="0400", stan=f"{int(stan) + 1:06d}").replace(
                original_data="0200" + stan + "1125120000" + "0" * 22))
            assert rev.response_code == "00"
        await term.aclose()
    assert len(issuer.traffic("040")) == 3


@trio_test
async def test_0400_that_cannot_be_sent_is_stored_and_forwarded_not_lost(dsn):
    # The link is full (max_in_flight 1: a purchase held by the issuer) when the 0400
    # comes: nothing can be sent, yet this 0400 is the original's one reversal, so it
    # goes by store-and-forward (0420), and a later reversal sends nothing more.
    held = []

    def answer(m: Message) -> Message | None:
        if m.mti == "0200" and m.additional_data == "HOLD":
            held.append(m)
            return None
        return approve(m)

    issuer = FakeIssuer(answer)
    od = "0200" + "000080" + "1125120000" + "0" * 22
    async with serving(issuer) as port, running_switch(
            config_dict(dsn, port, max_in_flight=1)) as sw:
        a = await Terminal.connect(sw.ports["pos"])
        b = await Terminal.connect(sw.ports["pos"])
        assert (await a.request(purchase(stan="000080"))).response_code == "00"
        await a.send(purchase(stan="000090").replace(additional_data="HOLD"))
        await issuer.wait_for(lambda: held)
        rev = await b.request(purchase(mti="0400", stan="000081").replace(original_data=od))
        again = await b.request(purchase(mti="0400", stan="000082").replace(original_data=od))
        assert (await a.recv()).response_code == "91"
        first_stan = issuer.traffic("0200")[0].stan
        await issuer.wait_for(lambda: any(
            m.original_data[4:10] == first_stan for m in issuer.traffic("042")), 10)
        await a.aclose()
        await b.aclose()
    assert (rev.response_code, again.response_code) == ("00", "00")
    assert issuer.traffic("040") == []
    # Two 0420s queued: the reversal (once, for both 0400s) and the held purchase's.
    assert [r[0] for r in saf(dsn)] == ["0420", "0420"]
