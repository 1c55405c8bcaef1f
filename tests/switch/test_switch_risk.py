"""Risk scoring wired into the 0100/0200 paths (switch/participants/risk.py), in-process
against the fakes of txnfakes.py in virtual time; the state's rebuild from the journal
against real PostgreSQL. Asserted: the DE39 the terminal gets, what the issuer link
received, the journal's risk_scored row, the ledger's decline reasons, the metrics."""

from __future__ import annotations

import os
import textwrap
from dataclasses import replace
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from test_txn import virtual
from txnfakes import ONUS_PAN, Bench, FakeLedger, key, request

from payswitch.routing.risk_rules import RiskConfig
from payswitch.switch.config import ConfigError, parse
from payswitch.switch.journal import Store
from payswitch.switch.risk import RELOAD_CHECK_S, RiskEngine


class Clock:
    def __init__(self, t: float = 1_795_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def bench(risk: dict[str, Any], path: str = "", clock: Clock | None = None,
          **kw: Any) -> Bench:
    b = Bench(**kw)
    b.svc.risk = RiskEngine(RiskConfig.from_dict(risk), path, clock=clock or Clock())
    return b


def risk_rows(b: Bench) -> list[dict[str, Any]]:
    return [msg for event, msg, _ in b.store.rows if event == "risk_scored"]


def sample(b: Bench, name: str, **labels: str) -> float:
    return b.svc.metrics.registry.get_sample_value(name, labels) or 0.0


@virtual
async def test_a_blocked_mcc_is_declined_59_before_anything_reaches_the_issuer():
    b = bench({"use_model": False, "rules": {"blocked_mccs": ["7995"]}},
              ledger=FakeLedger())
    req = request(mcc="7995")
    resp = await b.send(req)
    assert resp.response_code == "59"
    assert b.links["visa"].sent == []  # nothing forwarded
    assert b.ledger.holds == {}
    assert b.ledger.decline_reasons[key(req)] == ["R20"]  # the payment's declined event
    row = risk_rows(b)[0]
    assert (row["score"], row["action"], row["reasons"]) == (999, "decline", ["R20"])
    assert row["input"]["mcc"] == "7995" and "4761739001010010" not in str(row)
    assert b.store.answer(key(req)) == "59"
    assert sample(b, "risk_decisions_total", decision="decline") == 1
    assert sample(b, "risk_score_count") == 1


@virtual
async def test_a_terminal_group_is_enforced_while_the_rest_is_scored_in_shadow():
    """The demo's split: its fraud feed's terminals (here TERMMAC1's group "TERMM")
    get risk declines, every other terminal is only scored."""
    b = bench({"use_model": False, "mode": "shadow", "rules": {"blocked_mccs": ["7995"]},
               "terminal_groups": {"feed": {"terminals": ["TERMM"], "mode": "enforce"}}})
    assert (await b.send(request(mcc="7995"))).response_code == "00"
    assert len(b.links["visa"].sent) == 1
    rows = risk_rows(b)
    assert (rows[0]["action"], rows[0]["would"], rows[0]["shadow"]) == (
        "approve", "decline", True)
    b.svc.terminals["TERMMAC1"] = replace(b.svc.terminals["TERMMAC1"], mac_key="")
    resp = await b.send(request(mcc="7995", terminal="TERMMAC1"))
    assert resp.response_code == "59" and len(b.links["visa"].sent) == 1
    assert risk_rows(b)[1]["action"] == "decline"


@virtual
async def test_an_issuer_may_ask_for_05_instead_of_59():
    b = bench({"use_model": False, "rules": {"blocked_mccs": ["7995"]},
               "issuers": {"visa": {"decline_code": "05"}}})
    assert (await b.send(request(mcc="7995"))).response_code == "05"


@virtual
async def test_a_clean_request_is_scored_and_forwarded():
    b = bench({"use_model": False, "rules": {"blocked_mccs": ["7995"]}})
    resp = await b.send(request(mcc="5411"))
    assert resp.response_code == "00"
    assert len(b.links["visa"].sent) == 1
    assert risk_rows(b)[0]["action"] == "approve"
    assert sample(b, "risk_decisions_total", decision="approve") == 1


@virtual
async def test_shadow_mode_records_what_it_would_do_and_declines_nothing():
    b = bench({"mode": "shadow", "use_model": False, "rules": {"blocked_mccs": ["7995"]}})
    resp = await b.send(request(mcc="7995"))
    assert resp.response_code == "00"
    assert len(b.links["visa"].sent) == 1
    row = risk_rows(b)[0]
    assert (row["action"], row["would"], row["shadow"]) == ("approve", "decline", True)


@virtual
async def test_card_velocity_is_kept_across_requests_of_one_card_only():
    b = bench({"use_model": False, "rules": {"max_card_1m": 2}})
    codes = [(await b.send(request(stan=f"{i:06d}"))).response_code for i in range(1, 5)]
    assert codes == ["00", "00", "00", "59"]  # the 4th sees 3 in the last minute: > 2
    assert risk_rows(b)[-1]["reasons"] == ["R02"]
    other = await b.send(request(stan="000010", pan="4761739001010028"))
    assert other.response_code == "00"


@virtual
async def test_on_us_cards_are_scored_under_the_onus_issuer():
    b = bench({"use_model": False, "rules": {"blocked_mccs": ["7995"]},
               "issuers": {"onus": {"decline_code": "05"}}}, ledger=FakeLedger())
    resp = await b.send(request(pan=ONUS_PAN, mcc="7995"))
    assert resp.response_code == "05"  # the on-us issuer's choice
    assert b.ledger.holds == {}
    ok = await b.send(request(pan=ONUS_PAN, stan="000002", mcc="5411"))
    assert ok.response_code == "00" and len(b.ledger.holds) == 1


@virtual
async def test_rules_reload_when_the_config_file_changes_and_a_bad_one_is_refused(tmp_path):
    path = tmp_path / "switch.toml"
    path.write_text('[risk]\nuse_model = false\n')
    clock = Clock()
    b = bench({"use_model": False}, str(path), clock)
    assert (await b.send(request(stan="000001", mcc="7995"))).response_code == "00"

    path.write_text('[risk]\nuse_model = false\n[risk.rules]\nblocked_mccs = ["7995"]\n')
    os.utime(path, (clock.t, clock.t + 5))
    assert (await b.send(request(stan="000002", mcc="7995"))).response_code == "00"  # not looked
    clock.t += RELOAD_CHECK_S
    assert (await b.send(request(stan="000003", mcc="7995"))).response_code == "59"

    path.write_text('[risk]\nuse_model = false\n[risk.rules]\nmax_card_1m = -1\n')
    os.utime(path, (clock.t, clock.t + 10))
    clock.t += RELOAD_CHECK_S
    assert (await b.send(request(stan="000004", mcc="7995"))).response_code == "59"  # kept
    assert b.svc.risk.reloads == 1


BASE = {"links": [{"name": "visa", "host": "127.0.0.1", "port": 1}],
        "routes": [{"prefix": "4", "link": "visa"}]}


@pytest.mark.parametrize(("risk", "named"), [
    ({"rules": {"max_card_1x": 3}}, "risk.rules.max_card_1x"),
    ({"thresholds": {"decline": 5000}}, "risk.thresholds.decline"),
    ({"issuers": {"visa": {"decline_code": "51"}}}, "risk.issuers.visa.decline_code"),
    ({"modes": "shadow"}, "risk.modes"),
])
def test_bad_risk_config_is_refused_with_the_key_named(risk, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse({**BASE, "risk": risk})


def test_a_missing_model_file_is_refused_at_start(tmp_path):
    cfg = parse({**BASE, "risk": {"model_file": str(tmp_path / "none.txt")}})
    with pytest.raises(ConfigError, match="risk.model_file"):
        RiskEngine(cfg.risk)


def test_risk_section_in_a_file(tmp_path):
    from payswitch.switch.config import load

    p = tmp_path / "s.toml"
    p.write_text(textwrap.dedent("""
        [[links]]
        name = "visa"
        host = "127.0.0.1"
        port = 1
        [risk]
        mode = "shadow"
        [risk.thresholds]
        decline = 500
        refer = 300
    """))
    cfg = load(str(p))
    assert cfg.path == str(p) and cfg.risk.shadow and cfg.risk.default.decline == 500


def test_the_state_is_rebuilt_from_the_journals_last_24h(dsn):
    """A switch that restarts keeps its card windows: the risk_scored rows of the last
    24 h in PostgreSQL are replayed; older ones are not."""
    async def main() -> None:
        clock = Clock()
        first = bench({"use_model": False, "rules": {"max_card_1m": 2}}, clock=clock)
        for i in range(1, 4):
            assert (await first.send(request(stan=f"{i:06d}"))).response_code == "00"
        store = Store(dsn, pool_size=1)
        try:
            await store.migrate()
            for event, msg, dup_key in first.store.rows:
                if event == "risk_scored":
                    await store.append(event, msg, dup_key=dup_key)
            # an old row (25 h ago) must not count
            last = risk_rows(first)[-1]
            await store.append("risk_scored", dict(last, input=dict(
                last["input"], card_token="old")), dup_key="old")
            await store.call_alone(lambda c: c.execute(
                "update switch_journal set at = now() - interval '25 hours'"
                " where dup_key = 'old'"))
            restarted = bench({"use_model": False, "rules": {"max_card_1m": 2}},
                              clock=clock)
            assert await store.risk_inputs(restarted.svc.risk.replay) == 3
        finally:
            store.close()
        resp = await restarted.send(request(stan="000009"))
        assert resp.response_code == "59"  # the 4th of the card within a minute
        fresh = bench({"use_model": False, "rules": {"max_card_1m": 2}}, clock=clock)
        assert (await fresh.send(request(stan="000009"))).response_code == "00"
    trio.run(main)


def test_a_real_switch_scores_journals_and_keeps_card_windows_across_a_restart(
        dsn, monkeypatch):
    """Sockets and PostgreSQL: the 4th purchase of a card within a minute is declined
    59 and never reaches the issuer; after a restart on the same database the 5th is
    declined too (the windows were rebuilt from the journal's risk_scored rows)."""
    from switchkit import FakeIssuer, Terminal, config_dict, purchase, running_switch, serving

    monkeypatch.setenv("PAYSWITCH_TEST_RISK_KEY", "ab" * 16)  # the card token survives

    async def main() -> None:
        issuer = FakeIssuer()
        async with serving(issuer):
            cfg = config_dict(dsn, issuer.port)
            cfg["switch"]["fingerprint_key_env"] = "PAYSWITCH_TEST_RISK_KEY"
            cfg["risk"] = {"use_model": False, "rules": {"max_card_1m": 2}}
            async with running_switch(cfg) as sw:
                term = await Terminal.connect(sw.ports["pos"])
                codes = [(await term.request(purchase(stan=f"{i:06d}"))).response_code
                         for i in range(1, 5)]
                await term.aclose()
                rows = await sw.store.history("T:TERM0001|0200|000004|1125120000|1250")
            assert codes == ["00", "00", "00", "59"]
            assert len(issuer.traffic("02")) == 3
            (risk,) = [r for r in rows if r["event"] == "risk_scored"]
            assert risk["fields"]["reasons"] == ["R02"]
            async with running_switch(cfg) as sw:
                term = await Terminal.connect(sw.ports["pos"])
                again = await term.request(purchase(stan="000005"))
                await term.aclose()
            assert again.response_code == "59"

    async def bounded() -> None:
        with trio.fail_after(60):
            await main()
    trio.run(bounded)


def test_de7_as_the_risk_clock_for_replayed_days():
    from payswitch.switch.risk import de7_ms

    now = 1_795_000_000_000  # 2026-11-18
    assert de7_ms("1101000000", now) == 1_793_491_200_000  # 2026-11-01T00:00:00Z
    assert de7_ms("1231235959", 1_767_312_000_000) == 1_767_225_599_000  # last year
    assert de7_ms("1332000000", now) is None and de7_ms("11010000", now) is None
    with pytest.raises(ConfigError, match="switch.risk_clock"):
        parse({**BASE, "switch": {"risk_clock": "terminal"}})


@virtual
async def test_with_the_de7_clock_a_replayed_burst_counts_in_its_own_minute():
    b = bench({"use_model": False, "rules": {"max_card_1m": 2}})
    b.svc.risk.use_de7 = True
    times = ["1101000000", "1101000010", "1101000020", "1101000030", "1101003000"]
    codes = [(await b.send(request(stan=f"{i:06d}").replace(transmission_time=t))
              ).response_code for i, t in enumerate(times, 1)]
    # the 4th is the 4th within a DE7 minute; the 5th 30 DE7 minutes later
    assert codes == ["00", "00", "00", "59", "00"]


def _tiny_model(path: Any, flip: bool) -> None:
    """A LightGBM model over the risk features that scores high when the amount is
    high (or, ``flip``, low): two files that must score one request differently."""
    import lightgbm as lgb
    import numpy as np

    from payswitch.routing.risk_features import FEATURES
    rng = np.random.default_rng(1)
    x = rng.random((400, len(FEATURES))) * 12
    y = (x[:, 0] < 6) if flip else (x[:, 0] > 6)
    lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 1},
              lgb.Dataset(x, y.astype(int), feature_name=list(FEATURES)),
              num_boost_round=5).save_model(str(path))


def test_a_new_model_file_is_loaded_on_reload_and_the_windows_stay(tmp_path):
    from payswitch.routing.risk_features import AuthInput

    a_file, b_file, cfg = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "switch.toml"
    _tiny_model(a_file, flip=False)
    _tiny_model(b_file, flip=True)
    cfg.write_text(f'[risk]\nmodel_file = "{a_file}"\n')
    clock = Clock()
    engine = RiskEngine(parse_risk_file(cfg), str(cfg), clock=clock)

    def auth(k: int) -> AuthInput:
        return AuthInput(at_ms=engine.now_ms(), card_token="c1", bin6="476173",
                         amount_minor=100_000, mcc="5999", merchant_id="m1",
                         terminal_id="t1", country="840", lat=None, lon=None,
                         entry_mode=1, is_cash=False)

    for k in range(20):  # enough for the card's running windows
        first = engine.assess(auth(k), "visa")
        clock.t += 1
    card = engine.scorer.state.cards["c1"]
    assert card.win is not None
    cfg.write_text(f'[risk]\nmodel_file = "{b_file}"\n')
    os.utime(cfg, (clock.t, clock.t + 5))
    clock.t += RELOAD_CHECK_S
    second = engine.assess(auth(20), "visa")
    assert engine.reloads == 1
    assert first.model_score is not None and second.model_score is not None
    assert (first.model_score > 500) != (second.model_score > 500)
    assert engine.scorer.state.cards["c1"] is card and card.win is not None
    assert card.win.d1h and len(card.win.d1h) == 21


def parse_risk_file(path: Any) -> RiskConfig:
    import tomllib

    from payswitch.switch.config import parse_risk
    with open(path, "rb") as f:
        return parse_risk(tomllib.load(f)["risk"])


def test_the_journal_row_keeps_the_input_as_asdict_did():
    from dataclasses import asdict

    from payswitch.routing.risk_decision import RiskDecision
    from payswitch.routing.risk_features import AuthInput
    from payswitch.switch.risk import journal_fields

    a = AuthInput(at_ms=1, card_token="tok", bin6="476173", amount_minor=5, mcc="5411",
                  merchant_id="m", terminal_id="t", country="840", lat=51.5, lon=None,
                  entry_mode=2, is_cash=True)
    d = RiskDecision(score=1, action="approve", response_code=None, reasons=(),
                     would="approve", shadow=False, rule_score=0, model_score=1)
    row = journal_fields(d, a)["input"]
    assert row == asdict(a) and list(row) == list(asdict(a)) and AuthInput(**row) == a


def _de7_ms_reference(de7: str | None, now_ms: int) -> int | None:
    """de7_ms as it was before its cache: three datetimes on every call."""
    from datetime import UTC, datetime

    if not de7 or len(de7) != 10 or not de7.isdigit():
        return None
    year = datetime.fromtimestamp(now_ms / 1000, UTC).year
    best = None
    for y in (year - 1, year, year + 1):
        try:
            t = datetime(y, int(de7[:2]), int(de7[2:4]), int(de7[4:6]), int(de7[6:8]),
                         int(de7[8:]), tzinfo=UTC)
        except ValueError:
            continue
        ms = int(t.timestamp() * 1000)
        if best is None or abs(ms - now_ms) < abs(best - now_ms):
            best = ms
    return best


# around new year 2027 and 2028 (a leap year: 0229 is valid in one year of three)
_EDGES = [1_798_761_600_000, 1_830_297_600_000]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(
    st.one_of(st.integers(1_700_000_000_000, 1_900_000_000_000),
              st.sampled_from([e + d for e in _EDGES for d in (-1, 0, 1)]),
              st.sampled_from(_EDGES).flatmap(
                  lambda e: st.integers(e - 3_000, e + 3_000))),
    st.one_of(st.sampled_from(["0229120000", "1231235959", "0101000000", "0230000000",
                               "1301000000", "123123595", "12312359x9"]),
              st.tuples(st.integers(1, 12), st.integers(1, 31), st.integers(0, 23),
                        st.integers(0, 59), st.integers(0, 59)).map(
                  lambda t: "".join(f"{v:02d}" for v in t)))), min_size=1, max_size=30))
def test_de7_ms_with_its_cache_is_the_conversion_it_replaces(calls):
    from payswitch.switch import risk

    for now, de7 in calls:  # one process's sequence: the caches carry over
        assert risk.de7_ms(de7, now) == _de7_ms_reference(de7, now), (de7, now)


def test_the_de7_cache_stays_bounded():
    from payswitch.switch import risk

    now = 1_795_000_000_000
    for k in range(risk.DE7_CACHE_SIZE + 50):
        risk.de7_ms(f"11{k % 28 + 1:02d}{k // 3600 % 24:02d}{k // 60 % 60:02d}{k % 60:02d}",
                    now)
    assert len(risk._DE7_CACHE) <= risk.DE7_CACHE_SIZE
