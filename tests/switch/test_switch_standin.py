"""Stand-in (switch/participants/standin.py) in-process against the fakes, virtual
time: the terminal's answer, the ledger hold marked stand-in, the journal's standin
row and the 0120 advice queued with the answer (DE90 = the original's identifiers)."""

from __future__ import annotations

from typing import Any

import trio
from test_switch_failover import Answers, bench
from test_txn import virtual
from txnfakes import FakeLedger, key, request

from payswitch.codecs.iso8583.message import Message
from payswitch.routing.risk_rules import RiskConfig
from payswitch.switch.risk import RiskEngine

LIMITS = {"max_daily_count": 2, "max_single_amount_minor": 5000,
          "max_daily_amount_minor": 8000, "require_card_checks": False,
          "max_risk_score": 500}


def standin_bench(answers: Answers, on_timeout: bool = False, **limits: Any):
    b = bench(answers, standin={"4": {**LIMITS, **limits, "on_timeout": on_timeout}})
    b.ledger = b.svc.ledger = FakeLedger(funds_minor=10**9)
    return b


def standin_rows(b) -> list[dict[str, Any]]:
    return [m for e, m, _ in b.store.rows if e == "standin"]


@virtual
async def test_every_route_down_is_approved_in_stand_in_with_a_hold_and_an_advice():
    b = standin_bench(Answers())
    b.links["visa"].state = b.links["visa2"].state = "down"
    t0 = trio.current_time()
    req = request(amount=1250)
    resp = await b.send(req)
    assert resp.response_code == "00" and resp.auth_code.startswith("S")
    assert trio.current_time() - t0 < 0.1
    assert b.ledger.holds == {key(req): 1250} and b.ledger.stand_in == [key(req)]
    (row,) = standin_rows(b)
    assert (row["response_code"], row["after"]) == ("00", "unreachable")
    ((dup, item),) = b.store.saf
    assert dup == key(req) and item.mti == "0220" and item.link == "visa"
    msg = item.message
    assert (msg["response_code"], msg["auth_code"], msg["amount_minor"]) == (
        "00", resp.auth_code, 1250)
    assert msg["original_data"].startswith("0200") and "pan_masked" not in msg


@virtual
async def test_stand_in_stays_within_the_issuers_limits():
    b = standin_bench(Answers())
    b.links["visa"].state = b.links["visa2"].state = "down"
    codes = [(await b.send(request(stan=f"{i:06d}", amount=a))).response_code
             for i, a in ((1, 6000), (2, 3000), (3, 3000), (4, 3000))]
    # over max_single; ok; ok (2 today); a 3rd over max_daily_count -> 91
    assert codes == ["91", "00", "00", "91"]
    assert [r["reason"] for r in standin_rows(b)] == [
        "max_single_amount", "approved", "approved", "max_daily_count"]
    assert len(b.store.saf) == 2


@virtual
async def test_a_risky_request_is_not_stood_in_for():
    b = standin_bench(Answers())
    b.svc.risk = RiskEngine(RiskConfig.from_dict(
        {"use_model": False, "mode": "shadow", "rules": {"blocked_mccs": ["7995"]}}))
    b.links["visa"].state = b.links["visa2"].state = "down"
    assert (await b.send(request(mcc="7995"))).response_code == "91"  # score 999 > 500
    assert standin_rows(b)[0]["reason"] == "risk_score"


@virtual
async def test_a_timeout_stands_in_only_where_the_issuer_allows_it():
    answers = Answers()
    answers.silent.update({"visa", "visa2"})
    strict = standin_bench(answers)
    assert (await strict.send(request())).response_code == "91"
    assert [m for m, _ in strict.store.saf_mtis()] == ["0420"]  # as always
    lenient = standin_bench(answers, on_timeout=True)
    resp = await lenient.send(request())
    assert resp.response_code == "00"
    (row,) = standin_rows(lenient)
    assert row["after"] == "timeout"
    # the advice carries the identifiers of the request the issuer may have seen
    ((_, item),) = lenient.store.saf
    sent = lenient.links["visa"].sent[0]
    assert item.message["original_data"] == (
        "0200" + sent.stan + sent.transmission_time + sent.acquirer_id.zfill(11) + "0" * 11)


@virtual
async def test_no_stand_in_without_its_config():
    b = bench(Answers())
    b.links["visa"].state = b.links["visa2"].state = "down"
    assert (await b.send(request())).response_code == "91"
    assert b.store.saf == []


def test_a_stand_in_advice_is_durable_and_reaches_the_issuer_once_it_is_back(dsn):
    """Sockets and PostgreSQL: with the issuer gone, a purchase is approved in stand-in;
    the switch is then killed (cancelled: no drain, nothing in memory kept); a new
    switch on the same database sends the 0220 advice once the issuer is back, with
    DE90 = the identifiers the issuer would de-duplicate by, and it is acknowledged."""
    import psycopg
    from switchkit import FakeIssuer, Terminal, approve, config_dict, purchase

    from payswitch.switch.config import parse
    from payswitch.switch.server import Switch

    issuer = FakeIssuer(answer=approve)

    async def switch_in(nursery: trio.Nursery, cfg: dict) -> Switch:
        return await nursery.start(Switch(parse(cfg)).run)

    async def main() -> None:
        async with trio.open_nursery() as outer:
            scope = trio.CancelScope()

            async def issuer_for_a_while() -> None:
                with scope:
                    await issuer.serve()
            await outer.start(_started, issuer_for_a_while, issuer)
            cfg = config_dict(dsn, issuer.port)
            cfg["routing"] = {"ranges": [{"prefix": "4", "routes": [{"link": "visa"}]}],
                              "standin": {"4": {**LIMITS}}}
            async with trio.open_nursery() as first:
                sw = await switch_in(first, cfg)
                await sw.links["visa"].signed_on.wait()
                scope.cancel()  # the issuer goes away
                await issuer.drop_all()
                while sw.links["visa"].state == "signed_on":
                    await trio.sleep(0.02)
                term = await Terminal.connect(sw.ports["pos"])
                resp = await term.request(purchase(amount=1500))
                await term.aclose()
                first.cancel_scope.cancel()  # killed: no drain
            assert resp.response_code == "00" and resp.auth_code.startswith("S")
            with psycopg.connect(dsn) as conn:
                (n,) = conn.execute("select count(*) from switch_saf where mti = '0220'"
                                    ).fetchone()
            assert n == 1
            assert issuer.traffic("02") == []  # the issuer never saw the purchase
            outer.start_soon(issuer.serve, issuer.port)
            async with trio.open_nursery() as second:
                sw = await switch_in(second, cfg)
                await issuer.wait_for(lambda: issuer.traffic("022"), 20)
                await trio.sleep(0.3)
                second.cancel_scope.cancel()
            outer.cancel_scope.cancel()
        (advice,) = issuer.traffic("022")
        assert advice.mti == "0220" and advice.response_code == "00"
        assert advice.amount_minor == 1500 and advice.auth_code == resp.auth_code
        assert advice.original_data[:4] == "0200"
        assert advice.pan is None  # no [hsm] here, so no PAN at rest (with one: DE2)
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("select event, fields->>'after' from switch_journal"
                                " where event in ('standin', 'saf_acked')").fetchall()
        assert ("standin", "unreachable") in rows and ("saf_acked", None) in rows

    async def bounded() -> None:
        with trio.fail_after(60):
            await main()
    trio.run(bounded)


async def _started(fn, issuer, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Start ``fn`` (which serves ``issuer``) and report once its port is bound."""
    async with trio.open_nursery() as n:
        n.start_soon(fn)
        while not issuer.port:
            await trio.sleep(0.01)
        task_status.started()


@virtual
async def test_a_card_its_issuer_just_declined_is_not_approved_in_its_absence():
    answers = Answers()
    b = standin_bench(answers)
    declined = Message(mti="0210", response_code="51")
    b.links["visa"].answer = lambda m: declined.replace(stan=m.stan, rrn=m.rrn)
    assert (await b.send(request(stan="000001"))).response_code == "51"
    b.links["visa"].state = b.links["visa2"].state = "down"
    assert (await b.send(request(stan="000002"))).response_code == "91"
    assert standin_rows(b)[0]["reason"] == "issuer_declined_51"
    other = await b.send(request(stan="000003", pan="4761739001010028"))
    assert other.response_code == "00"  # another card: stood in for
