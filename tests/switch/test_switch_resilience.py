"""Timeouts, SAF reversals, duplicates, malformed input, refusals, link drops, late
responses: the switch against a scripted issuer over real sockets and real PG."""

from __future__ import annotations

import psycopg
import trio
import trio.testing
from switchkit import (
    DIALECT,
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
from payswitch.switch.errors import LinkBusy, StoreError
from payswitch.switch.mux import Mux
from payswitch.switch.replay import payment_state


def saf_rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select mti, state, attempts from switch_saf order by id").fetchall()


@trio_test
async def test_timeout_answers_91_and_0420_is_delivered_when_issuer_is_back(dsn):
    silent = True

    def answer(m: Message) -> Message | None:
        if m.mti.startswith("042"):
            return None if silent else approve(m)
        return None  # never answers the purchase

    issuer = FakeIssuer(answer)
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        t0 = trio.current_time()
        resp = await term.request(purchase())
        elapsed = trio.current_time() - t0
        assert resp.response_code == "91"
        # Answered by the switch's own timeout (request_timeout_ms, 2 s), not left to
        # the terminal's: the bound is wide for a loaded CI box.
        assert elapsed < 5
        # The issuer stays silent: the 0420 is retried (0421), still pending.
        await issuer.wait_for(lambda: len(issuer.traffic("042")) >= 2)
        assert [m.mti for m in issuer.traffic("042")][:2] == ["0420", "0421"]
        key = "T:TERM0001|0200|000001|1125120000|1250"
        events = [r["event"] for r in await sw.store.history(key)]
        assert events == ["request", "issuer_request", "saf_queued", "response"]
        silent = False
        await issuer.wait_for(lambda: saf_rows(dsn)[0][1] == "acked", 5)
        state = payment_state(key, await sw.store.history(key))
        await term.aclose()

    (orig,) = issuer.traffic("0200")
    rev = issuer.traffic("042")[-1]
    assert rev.rrn == orig.rrn and rev.amount_minor == orig.amount_minor
    assert rev.original_data[:20] == "0200" + orig.stan + orig.transmission_time
    assert rev.pan is None  # no clear PAN at rest, so none in a stored advice
    [(mti, saf_state, attempts)] = saf_rows(dsn)
    assert (mti, saf_state) == ("0420", "acked") and attempts >= 3
    # The payment's story, rebuilt from the journal alone.
    assert (state.status, state.response_code, state.link) == ("reversed", "91", "visa")
    assert state.pan_masked == "476173******0010" and state.rrn == orig.rrn


@trio_test
async def test_late_response_is_not_delivered_to_another_waiter(dsn):
    # First purchase: answered after its timeout (3 s). Second, sent once the first got
    # its 91: answered after the late one (same connection, so in that order) and well
    # within its own timeout, however loaded the machine is.
    delays = {"000001": 3.5, "000002": 1.0}

    def answer(m: Message) -> object:
        if m.mti.startswith("042"):
            return approve(m)
        return (delays[m.additional_data], approve(m).replace(
            auth_code="AUTH" + m.additional_data[-2:]))

    issuer = FakeIssuer(answer)
    async with serving(issuer) as port, running_switch(
            config_dict(dsn, port, request_timeout_ms=3000)) as sw:
        t1 = await Terminal.connect(sw.ports["pos"])
        t2 = await Terminal.connect(sw.ports["pos"])
        await t1.send(purchase(stan="000001").replace(additional_data="000001"))
        first = await t1.recv()
        assert first.response_code == "91"
        await t2.send(purchase(stan="000002").replace(additional_data="000002"))
        second = await t2.recv()
        link = sw.links["visa"]
        late = sw.metrics.link_late.labels("visa")._value.get()
        await issuer.wait_for(lambda: any(r[1] == "acked" for r in saf_rows(dsn)), 5)
        assert link.mux.in_flight == 0
        await t1.aclose()
        await t2.aclose()
    assert second.response_code == "00" and second.auth_code == "AUTH02"
    assert late == 1
    assert [r[0] for r in saf_rows(dsn)] == ["0420"]  # reversed once, not twice


def test_mux_waits_answered_early_timed_out_or_dropped_in_virtual_time():
    """A response before the wait: it returns at once. A wait given up at its deadline
    (the link's timeout) then a link drop: the drop marks it, nothing is woken twice."""
    async def main() -> None:
        mux = Mux(max_in_flight=4, late_memory=4)
        early = mux.register(Message(mti="0200", stan="000001"))
        assert mux.deliver(Message(mti="0210", stan="000001")) == "matched"
        await early.wait()
        assert early.response is not None and early.response.stan == "000001"
        slow = mux.register(Message(mti="0200", stan="000002"))
        with trio.move_on_after(2) as scope:
            await slow.wait()
        assert scope.cancelled_caught and trio.current_time() == 2
        mux.fail_all()  # before the exchange forgot it: a cancelled wait is not woken
        assert slow.failed and slow.done and slow.response is None
        await trio.sleep(1)  # a stray wake-up of this task would end the sleep early
        assert trio.current_time() == 3
        mux.forget(slow, timed_out=True)
        assert mux.deliver(Message(mti="0210", stan="000002")) == "late"
        parked = mux.register(Message(mti="0200", stan="000003"))
        async with trio.open_nursery() as n:
            n.start_soon(parked.wait)
            await trio.testing.wait_all_tasks_blocked()
            mux.fail_all()  # the link dropped: the parked wait ends
        assert parked.failed and trio.current_time() == 3

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_mux_never_hands_a_late_response_to_a_new_waiter_with_the_same_stan():
    mux = Mux(max_in_flight=4, late_memory=4)
    old = Message(mti="0200", stan="000123", rrn="111111111111")
    w_old = mux.register(old)
    mux.forget(w_old, timed_out=True)
    new = Message(mti="0200", stan="000123", rrn="222222222222")
    w_new = mux.register(new)
    assert mux.deliver(Message(mti="0210", stan="000123", rrn="111111111111")) == "late"
    assert w_new.response is None and not w_new.done
    assert mux.deliver(Message(mti="0210", stan="000123", rrn="222222222222")) == "matched"
    assert w_new.response.rrn == "222222222222"
    assert mux.deliver(Message(mti="0210", stan="000999")) == "unmatched"


@trio_test
async def test_duplicate_and_repeat_get_the_original_answer_issuer_sees_one(dsn):
    issuer = FakeIssuer(lambda m: (0.3, approve(m)))
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port)
        async with running_switch(cfg) as sw:
            a = await Terminal.connect(sw.ports["pos"])
            b = await Terminal.connect(sw.ports["pos"])
            # Same request twice at once: the second waits for the first's outcome.
            await a.send(purchase())
            await trio.sleep(0.05)
            await b.send(purchase())
            raw_a, raw_b = await a.recv_raw(), await b.recv_raw()
            # A repeat (0201) after completion: replayed from the journal.
            raw_rep = await a.send(purchase(mti="0201")) or await a.recv_raw()
            await a.aclose()
            await b.aclose()
        # After a restart the journal still answers, the issuer is not asked again.
        async with running_switch(cfg) as sw:
            c = await Terminal.connect(sw.ports["pos"])
            await c.send(purchase())
            raw_c = await c.recv_raw()
            # Same STAN, different amount: a new request, it reaches the issuer.
            other = await c.request(purchase(amount=999))
            await c.aclose()
    assert DIALECT.decode(raw_a).response_code == "00"
    assert raw_a == raw_b == raw_rep == raw_c
    assert len(issuer.traffic("02")) == 2 and other.response_code == "00"


@trio_test
async def test_same_key_other_card_or_processing_code_gets_94_not_the_replay(dsn):
    """The duplicate key (source, class, STAN, DE7, amount) leaves out the card, the
    processing code and the currency: a request matching it with another of those is
    not the original's retransmission and must not get its approval."""
    issuer = FakeIssuer(approve)
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port)
        async with running_switch(cfg) as sw:
            t = await Terminal.connect(sw.ports["pos"])
            first = await t.request(purchase())
            again = await t.request(purchase())  # the same card: replayed
            other_card = await t.request(purchase(pan="4111111111111111"))
            refund = await t.request(purchase(processing="200000"))
            await t.aclose()
    assert first.response_code == again.response_code == "00"
    assert again.auth_code == first.auth_code
    assert other_card.response_code == "94" and not other_card.auth_code
    assert refund.response_code == "94" and not refund.auth_code
    assert len(issuer.traffic("02")) == 1  # the issuer saw the first only
    with psycopg.connect(dsn) as conn:
        events = [e for (e,) in conn.execute(
            "select event from switch_journal where stan = '000001' order by id")]
        (fingerprint,) = conn.execute("select fingerprint from switch_dedup").fetchone()
    assert events.count("duplicate") == 1 and events.count("duplicate_mismatch") == 2
    assert fingerprint and "4111111111111111" not in fingerprint


@trio_test
async def test_malformed_message_gets_30_and_link_stays_up(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        good = DIALECT.encode(purchase(stan="000042"))
        bad = good.replace(b"000000001250", b"0000000012X0")
        assert bad != good
        await term.send_raw(bad)
        resp = await term.recv()
        # Unparseable garbage is dropped; the connection stays up.
        await term.send_raw(b"\x00garbage")
        ok = await term.request(purchase(stan="000043"))
        await term.aclose()
    assert (resp.mti, resp.stan, resp.response_code) == ("0210", "000042", "30")
    assert ok.response_code == "00" and ok.stan == "000043"
    assert [m.stan for m in issuer.traffic()] != [] and len(issuer.traffic()) == 1


@trio_test
async def test_oversize_frame_closes_the_connection(dsn):
    issuer = FakeIssuer()
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port)
        cfg["listeners"][0]["max_frame_bytes"] = 512
        async with running_switch(cfg) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            await term.stream.send_all((4000).to_bytes(2, "big") + b"0" * 100)
            assert await term.recv_raw() == b""
            await term.aclose()


@trio_test
async def test_unknown_terminal_gets_58_and_unknown_source_is_refused(dsn):
    issuer = FakeIssuer()
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port)
        cfg["listeners"].append({"name": "atm", "port": 0, "allowed_sources": ["10.9.9.9"]})
        # A terminal listener whose terminals all have a source accepts only those.
        cfg["listeners"].append({"name": "kiosk", "port": 0})
        cfg["terminals"].append({"id": "KIOSK001", "listener": "kiosk", "source": "10.1.1.1"})
        async with running_switch(cfg) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            resp = await term.request(purchase().replace(terminal_id="NOPE0001"))
            await term.aclose()
            stranger = await Terminal.connect(sw.ports["atm"])
            closed = await stranger.recv_raw(5)
            await stranger.aclose()
            kiosk = await Terminal.connect(sw.ports["kiosk"])
            closed_too = await kiosk.recv_raw(5)
            await kiosk.aclose()
            refused = sw.metrics.refused.labels("kiosk", "source not allowed")._value.get()
    assert resp.response_code == "58"
    assert closed == b"" and closed_too == b"" and refused == 1
    assert issuer.traffic() == []


@trio_test
async def test_link_drop_reconnects_signs_on_and_traffic_resumes(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        assert (await term.request(purchase(stan="000001"))).response_code == "00"
        await issuer.drop_all()
        link = sw.links["visa"]
        await issuer.wait_for(lambda: issuer.connections == 2
                              and link.state == "signed_on", 5)
        assert (await term.request(purchase(stan="000002"))).response_code == "00"
        await term.aclose()
    signons = [m for m in issuer.received if m.mti == "0800" and m.network_code == "001"]
    assert len(signons) == 2
    assert len(issuer.traffic("02")) == 2


@trio_test
async def test_link_down_answers_91_quickly_without_reversal(dsn):
    async with running_switch(config_dict(dsn, 1), wait_signed_on=False) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        resp = await term.request(purchase(), timeout_s=5)
        await term.aclose()
    assert resp.response_code == "91"
    assert saf_rows(dsn) == []


def test_mux_in_flight_limit_refuses_at_once():
    mux = Mux(max_in_flight=2, late_memory=2)
    mux.register(Message(mti="0200", stan=mux.next_stan()))
    mux.register(Message(mti="0200", stan=mux.next_stan()))
    try:
        mux.register(Message(mti="0200", stan=mux.next_stan()))
    except LinkBusy:
        pass
    else:
        raise AssertionError("third request accepted over max_in_flight=2")
    assert mux.in_flight == 2


@trio_test
async def test_link_drop_while_in_flight_answers_91_and_reverses_after_reconnect(dsn):
    issuer = FakeIssuer()

    def answer(m: Message) -> Message | None:
        if m.mti == "0200":
            issuer.drop_soon.set()  # drop the link instead of answering
            return None
        return approve(m)

    issuer.answer = answer
    issuer.drop_soon = trio.Event()

    async def dropper():
        await issuer.drop_soon.wait()
        await trio.sleep(0.1)
        await issuer.drop_all()

    async with trio.open_nursery() as n:
        await n.start(issuer.serve)
        n.start_soon(dropper)
        cfg = config_dict(dsn, issuer.port, request_timeout_ms=10_000)
        async with running_switch(cfg) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            t0 = trio.current_time()
            resp = await term.request(purchase(), timeout_s=15)
            elapsed = trio.current_time() - t0
            await issuer.wait_for(lambda: saf_rows(dsn) == [("0420", "acked", 1)], 5)
            await term.aclose()
        n.cancel_scope.cancel()
    assert resp.response_code == "91"
    assert elapsed < 8  # did not wait for the 10 s timeout: the drop woke the waiter
    (orig,) = issuer.traffic("0200")
    (rev,) = issuer.traffic("042")
    assert rev.original_data[4:10] == orig.stan


@trio_test
async def test_concurrent_terminals_with_duplicates_each_request_reaches_issuer_once(dsn):
    import random

    rng = random.Random(7)
    issuer = FakeIssuer(lambda m: (rng.uniform(0, 0.05), approve(m).replace(
        auth_code=m.stan)))  # auth code = switch STAN: tells answers apart
    answers: dict[str, list[bytes]] = {}
    cfg_terms = [{"id": f"LOAD{i:04d}", "listener": "pos"} for i in range(6)]

    async def terminal(sw, i: int) -> None:
        term = await Terminal.connect(sw.ports["pos"])
        for k in range(15):
            req = purchase(stan=f"{k:06d}", amount=100 + k).replace(terminal_id=f"LOAD{i:04d}")
            copies = 2 if k % 3 == 0 else 1  # every third request sent twice at once
            for _ in range(copies):
                await term.send(req)
            for _ in range(copies):
                answers.setdefault(f"{i}/{k}", []).append(await term.recv_raw())
        await term.aclose()

    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port)
        cfg["terminals"] += cfg_terms
        async with running_switch(cfg) as sw, trio.open_nursery() as n:
            for i in range(6):
                n.start_soon(terminal, sw, i)
    assert len(answers) == 6 * 15
    for raws in answers.values():
        assert len(set(raws)) == 1  # duplicates got the very same bytes
        assert DIALECT.decode(raws[0]).response_code == "00"
    reached = [(m.terminal_id, m.amount_minor) for m in issuer.traffic("0200")]
    assert len(reached) == len(set(reached)) == 6 * 15  # each exactly once
    auth_codes = {DIALECT.decode(r[0]).auth_code for r in answers.values()}
    assert len(auth_codes) == 6 * 15  # nobody got someone else's answer


@trio_test
async def test_saf_row_past_its_expiry_is_given_up_not_sent(dsn):
    issuer = FakeIssuer(lambda m: None)  # never answers: the purchase times out
    async with serving(issuer):
        cfg = config_dict(dsn, issuer.port)
        cfg["saf"]["expiry_s"] = 0
        async with running_switch(cfg) as sw:
            term = await Terminal.connect(sw.ports["pos"])
            assert (await term.request(purchase())).response_code == "91"
            await issuer.wait_for(lambda: saf_rows(dsn) == [("0420", "expired", 0)], 5)
            # The metric is counted once the row's commit is back in the switch's task.
            metric = sw.metrics.saf_expired.labels("visa")
            await issuer.wait_for(lambda: metric._value.get() >= 1, 5)
            expired = metric._value.get()
            await term.aclose()
    assert issuer.traffic("042") == []
    assert expired == 1


@trio_test
async def test_journal_failure_after_approval_answers_96_then_records_and_reverses(dsn):
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        real_complete = sw.store.complete
        failures = 2

        async def flaky_complete(*args, **kwargs):
            nonlocal failures
            if failures:
                failures -= 1
                raise StoreError("database error OperationalError (sqlstate 08006)")
            return await real_complete(*args, **kwargs)

        sw.store.complete = flaky_complete
        term = await Terminal.connect(sw.ports["pos"])
        resp = await term.request(purchase())
        # Written on a retry (idempotent: a second write changes nothing)...
        await issuer.wait_for(lambda: saf_rows(dsn) == [("0420", "acked", 1)], 8)
        key = "T:TERM0001|0200|000001|1125120000|1250"
        assert not await real_complete(key, "T:TERM0001", resp, [], [])
        # ...and a repeat now gets what the terminal was told.
        again = await term.request(purchase(mti="0201"))
        await term.aclose()
    assert resp.response_code == "96"
    assert again.response_code == "96"
    (orig,) = issuer.traffic("0200")
    (rev,) = issuer.traffic("042")
    assert rev.original_data[4:10] == orig.stan


@trio_test
async def test_approval_committed_but_ack_lost_is_corrected_and_reversed(dsn):
    # The COMMIT of the answer succeeds but its acknowledgement is lost (the connection
    # drops right after): the terminal is told 96, so the issuer's approval must be
    # reversed, although the retry finds the answer already recorded.
    issuer = FakeIssuer()
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        real_statement = sw.store._bulk._statement
        lost = []

        async def statement(calls):
            won = await real_statement(calls)  # really committed (autocommit)
            if any(b.gate == "d" for b in calls) and not lost:  # a complete
                lost.append(calls)
                # what the hot path's sender makes of a connection lost before the answer
                raise StoreError("database error OperationalError")
            return won

        sw.store._bulk._statement = statement
        term = await Terminal.connect(sw.ports["pos"])
        told = await term.request(purchase())
        await issuer.wait_for(lambda: [r[:2] for r in saf_rows(dsn)] == [("0420", "acked")], 10)
        again = await term.request(purchase(mti="0201"))
        key = "T:TERM0001|0200|000001|1125120000|1250"
        events = [r["event"] for r in await sw.store.history(key)]
        await term.aclose()
    assert lost and told.response_code == "96"
    assert again.response_code == "96"  # the repeat is told what the terminal was told
    assert "response_corrected" in events and events.count("saf_queued") == 1
    (orig,) = issuer.traffic("0200")
    assert {m.original_data[4:10] for m in issuer.traffic("042")} == {orig.stan}


@trio_test
async def test_saf_0430_acks_only_agreed_codes_and_retries_others(dsn):
    # The issuer answers the first 0420 with 96 (not an acknowledgement), then 00.
    codes = ["96", "00"]

    def answer(m: Message) -> Message | None:
        if m.mti.startswith("042"):
            return approve(m).replace(response_code=codes.pop(0) if codes else "00")
        return None  # the purchase times out: a 0420 is queued

    issuer = FakeIssuer(answer)
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        assert (await term.request(purchase())).response_code == "91"
        await issuer.wait_for(lambda: saf_rows(dsn)[0][1] == "acked", 10)
        await term.aclose()
    # The 96 did not acknowledge it: resent (0421) until the 00.
    assert not codes and saf_rows(dsn)[0][2] >= 2
    assert [m.mti for m in issuer.traffic("042")][:2] == ["0420", "0421"]


@trio_test
async def test_saf_attempt_not_counted_when_nothing_was_sent(dsn):
    async with running_switch(config_dict(dsn, 1), wait_signed_on=False) as sw:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("insert into switch_saf (link, mti, message, expires_at)"
                         " values ('visa', '0420', '{\"amount_minor\": 5}',"
                         " now() + interval '1 hour')")
        (row,) = await sw.store.saf_due(["visa"], 10, 0)
        await sw._saf_send(row)  # the link is down: LinkUnavailable, nothing sent
    [(mti, state, attempts)] = saf_rows(dsn)
    assert (mti, state, attempts) == ("0420", "pending", 0)


@trio_test
async def test_saf_rows_expire_while_their_link_is_down(dsn):
    async with running_switch(config_dict(dsn, 1), wait_signed_on=False) as sw:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("insert into switch_saf (link, mti, dup_key, message, expires_at)"
                         " values ('visa', '0420', 'k1', '{}', now() - interval '1 second')")
        expired = sw.metrics.saf_expired.labels("visa")
        with trio.fail_after(10):
            while expired._value.get() == 0:
                await trio.sleep(0.05)
        events = [r["event"] for r in await sw.store.history("k1")]
        assert sw.links["visa"].state != "signed_on"
    assert saf_rows(dsn) == [("0420", "expired", 0)] and events == ["saf_expired"]


@trio_test
async def test_echo_on_a_busy_link_does_not_stop_the_switch(dsn):
    # max_in_flight 1, a purchase held by the issuer past the echo interval: the echo
    # finds the link busy (LinkBusy). That is no reason to stop the switch (or drop
    # the link): the purchase times out, and the next one is approved.
    held = []

    def answer(m: Message) -> Message | None:
        if m.mti == "0200" and not held:
            held.append(m)
            return None
        return approve(m)

    issuer = FakeIssuer(answer)
    async with serving(issuer) as port, running_switch(config_dict(
            dsn, port, max_in_flight=1, echo_interval_ms=100,
            request_timeout_ms=1500)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        first = await term.request(purchase(stan="000001"))
        # The one slot may be taken a moment by the first one's 0420 or an echo (91,
        # LinkBusy): the switch is alive if a later purchase is approved.
        codes = []
        for i in range(2, 60):
            codes.append((await term.request(purchase(stan=f"{i:06d}"))).response_code)
            if codes[-1] == "00":
                break
            await trio.sleep(0.1)
        await term.aclose()
    assert first.response_code == "91" and codes[-1] == "00", codes
