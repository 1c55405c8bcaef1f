"""Rules, thresholds and decisions as the switch's risk participant would see them."""

import pytest

from payswitch.routing.risk_decision import APPROVE, DECLINE, REFER, RiskScorer
from payswitch.routing.risk_features import MINUTE_MS, AuthInput, RiskState
from payswitch.routing.risk_rules import RiskConfig, RiskConfigError


def auth(at_ms=0, card="c1", mcc="5411", country="840", amount=1000, merchant="m1",
         terminal="t1"):
    return AuthInput(at_ms=at_ms, card_token=card, bin6="476173", amount_minor=amount,
                     mcc=mcc, merchant_id=merchant, terminal_id=terminal, country=country,
                     lat=None, lon=None, entry_mode=1, is_cash=False)


@pytest.mark.parametrize(("cfg", "key"), [
    ({"rules": {"max_velocity": 3}}, "risk.rules.max_velocity"),
    ({"rules": {"max_card_1h": 0}}, "risk.rules.max_card_1h"),
    ({"rules": {"max_card_1h": "5"}}, "risk.rules.max_card_1h"),
    ({"rules": {"blocked_mccs": ["59"]}}, "risk.rules.blocked_mccs"),
    ({"thresholds": {"decline": 1200}}, "risk.thresholds.decline"),
    ({"thresholds": {"decline": 500, "refer": 700}}, "risk.thresholds.refer"),
    ({"issuers": {"visa": {"decline_code": "51"}}}, "risk.issuers.visa.decline_code"),
    ({"issuers": {"visa": {"declne": 5}}}, "risk.issuers.visa.declne"),
    ({"mccs": {"79": {"decline": 5}}}, "risk.mccs.79"),
    ({"mode": "audit"}, "risk.mode"),
    ({"extra": 1}, "risk.extra"),
    ({"model_file": 3}, "risk.model_file"),
    ({"terminal_groups": {"feed": {"terminals": ["SIMT"], "mode": "off"}}},
     "risk.terminal_groups.feed.mode"),
    ({"terminal_groups": {"feed": {"terminals": [], "mode": "enforce"}}},
     "risk.terminal_groups.feed.terminals"),
    ({"terminal_groups": {"feed": {"terminals": ["TOOLONG01"], "mode": "enforce"}}},
     "risk.terminal_groups.feed.terminals"),
    ({"terminal_groups": {"feed": {"terminals": ["S"], "mode": "shadow", "decline": 1}}},
     "risk.terminal_groups.feed.decline"),
    ({"terminal_groups": {"a": {"terminals": ["S"], "mode": "shadow"},
                          "b": {"terminals": ["S"], "mode": "enforce"}}},
     "risk.terminal_groups.b.terminals"),
])
def test_bad_config_is_refused_with_the_key_named(cfg, key):
    with pytest.raises(RiskConfigError) as e:
        RiskConfig.from_dict(cfg)
    assert str(e.value).startswith(key + ":")


def test_velocity_rule_declines_with_the_issuers_code():
    cfg = RiskConfig.from_dict({"rules": {"max_card_1m": 2},
                                "issuers": {"mc": {"decline_code": "05"}}})
    scorer = RiskScorer(cfg, RiskState())
    got = [scorer.assess(auth(at_ms=k * 1000), "mc") for k in range(4)]
    assert [d.action for d in got] == [APPROVE, APPROVE, APPROVE, DECLINE]
    assert got[3].response_code == "05" and got[3].reasons == ("R02",)
    visa = RiskScorer(cfg, RiskState())
    assert [visa.assess(auth(at_ms=k), "visa").response_code for k in range(4)][3] == "59"


def test_mcc_threshold_is_stricter_and_lists_block():
    cfg = RiskConfig.from_dict({
        "rules": {"max_card_1h": 1, "rule_score": 650, "blocked_countries": ["408"],
                  "allowed_cards": ["vip"]},
        "thresholds": {"decline": 800, "refer": 600},
        "mccs": {"7995": {"decline": 640}}})
    s = RiskScorer(cfg, RiskState())
    s.assess(auth(0), "visa")
    s.assess(auth(1000), "visa")
    assert s.assess(auth(2000), "visa").action == REFER  # 650: refer by default
    assert s.assess(auth(3000, mcc="7995"), "visa").action == DECLINE  # 650 >= 640
    d = s.assess(auth(10 * MINUTE_MS, card="c2", country="408"), "visa")
    assert (d.action, d.score, d.reasons) == (DECLINE, 999, ("R21",))
    assert s.assess(auth(0, card="vip", country="408"), "visa").action == APPROVE


def test_shadow_mode_records_but_never_declines():
    cfg = RiskConfig.from_dict({"mode": "shadow", "rules": {"blocked_mccs": ["7995"]}})
    d = RiskScorer(cfg, RiskState()).assess(auth(mcc="7995"), "visa")
    assert (d.action, d.would, d.response_code, d.shadow) == (APPROVE, DECLINE, None, True)
    assert d.reasons == ("R20",)


def test_a_terminal_group_enforces_while_the_rest_stays_in_shadow():
    cfg = RiskConfig.from_dict({"mode": "shadow", "rules": {"blocked_mccs": ["7995"]},
                                "terminal_groups": {
                                    "feed": {"terminals": ["SIMT"], "mode": "enforce"},
                                    "lab": {"terminals": ["SIMT9"], "mode": "shadow"}}})
    s = RiskScorer(cfg, RiskState())
    got = {t: s.assess(auth(mcc="7995", terminal=t), "visa")
           for t in ("DEMO0001", "SIMT0001", "SIMT9001")}
    assert {t: (d.action, d.would) for t, d in got.items()} == {
        "DEMO0001": (APPROVE, DECLINE), "SIMT0001": (DECLINE, DECLINE),
        "SIMT9001": (APPROVE, DECLINE)}  # the longest prefix decides
    assert got["SIMT0001"].response_code == "59" and not got["SIMT0001"].shadow


def test_reload_changes_rules_and_keeps_state():
    s = RiskScorer(RiskConfig.from_dict({}), RiskState())
    for k in range(3):
        assert s.assess(auth(k * 1000), "visa").action == APPROVE
    s.reload(RiskConfig.from_dict({"rules": {"max_card_1m": 2}}))
    assert s.assess(auth(4000), "visa").action == DECLINE  # the 3 before still count


def test_model_reasons_come_with_a_model_decline(tmp_path):
    from payswitch.lab.risk_cli import train_on_simulation
    from payswitch.routing.risk_model import RiskModel, TrainParams
    model = RiskModel(train_on_simulation(5, cards=300, days=2, params=TrainParams(rounds=20)))
    s = RiskScorer(RiskConfig.from_dict({"thresholds": {"decline": 1, "refer": 1}}),
                   RiskState(), model)
    d = s.assess(auth(amount=999_999), "visa")
    assert d.action == DECLINE and d.model_score is not None
    assert d.reasons and all(":" in r for r in d.reasons)
