"""The suite format and the check engine, without sockets: the loader refuses what it
cannot run (naming the key), every shipped suite loads, and each check fails on the
fault it is for (with a fake Crypto behind the Protocol)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.iso8583 import Message
from payswitch.simulators.cards import BY_NAME, card
from payswitch.simulators.certsuite import checks
from payswitch.simulators.certsuite.suite import (
    CASE_KEYS,
    CHECKS,
    SuiteError,
    find_suite,
    parse_suite,
    shipped,
)

HEAD = '[suite]\nname = "t"\nrole = "issuer-host"\nnetwork = "visa"\n'
CASE = '[[case]]\nname = "a"\nrequest = "purchase"\ncard = "visa_approve"\n'


def test_every_network_and_role_has_a_shipped_suite():
    names = set(shipped())
    for net in ("visa", "mastercard", "iso87ascii"):
        for role in ("issuer-host", "acquirer-host"):
            assert f"{net}-{role}" in names
            assert find_suite(None, role, net).network == net


@pytest.mark.parametrize(("text", "named"), [
    (HEAD + "colour = 1\n" + CASE, "'colour'"),
    (HEAD + CASE + "amunt_minor = 5\n", "'amunt_minor'"),
    (HEAD + CASE + 'checks = ["de39_alowed"]\n', "unknown check 'de39_alowed'"),
    (HEAD + CASE.replace("visa_approve", "visa_nope"), "unknown card 'visa_nope'"),
    (HEAD + CASE.replace('"purchase"', '"purchse"'), "unknown request template 'purchse'"),
    (HEAD + CASE + 'fields = { "1x" = "y" }\n', "fields key '1x'"),
    (HEAD + CASE + CASE, "case name 'a' used twice"),
    (HEAD + CASE + '[[case]]\nname = "r"\nrequest = "reversal"\n', "needs original"),
    (HEAD + CASE + 'amount_minor = "12"\n', "amount_minor: expected int"),
    (HEAD.replace("visa", "amex") + CASE, "unknown network 'amex'"),
    (HEAD + CASE + 'checks = ["reversal_de90"]\n', "unknown check 'reversal_de90' for issuer"),
])
def test_loader_refuses_naming_the_key(text, named):
    with pytest.raises(SuiteError, match=None) as e:
        parse_suite(text)
    assert named in str(e.value)


def test_a_wellformed_case_gets_the_role_defaults():
    s = parse_suite(HEAD + 'time_limit_ms = 900\n' + CASE + 'expect_codes = ["00"]\n'
                    'fields = { "41" = "TERM0042" }\n')
    c = s.cases[0]
    assert c.checks[:2] == ("response_mti", "de39_allowed") and c.mandatory
    assert c.time_limit_ms == 900 and c.fields == {41: "TERM0042"}


class FakeCrypto:
    def __init__(self, mac=True, arpc=True):
        self._mac, self._arpc = mac, arpc

    def mac_ok(self, payload, msg):
        return self._mac

    def arpc_ok(self, request, response):
        return self._arpc


PAN = card("visa_approve").pan
ARQC_DE55 = bytes.fromhex("9F2608") + bytes(8)
ARPC_DE55 = bytes.fromhex("910A") + bytes(8) + b"00"
ALL = ("response_mti", "de39_allowed", "de38_on_approval", "echoed_fields", "time_limit",
       "arpc", "mac")


def request():
    return Message(mti="0200", pan=PAN, processing_code="000000", amount_minor=2599,
                   transmission_time="1128101010", stan="000123", acquirer_id="400001",
                   rrn="112810000123", terminal_id="CERT0001", currency="840",
                   emv=ARQC_DE55)


def answer(req, **kw):
    fields = {n: getattr(req, n) for _, n in checks.ECHOED}
    fields.update(mti="0210", response_code="00", auth_code="123456", emv=ARPC_DE55,
                  mac=bytes(8))
    fields.update(kw)
    return Message(**fields)


def judge(resp, crypto=None, latency_ms=10.0, second=None):
    req = request()
    ex = checks.Exchange(req, resp(req) if callable(resp) else resp, latency_ms, b"x",
                         second=second, mac=True)
    return [(v.rule, v.field) for v in checks.judge_exchange(
        ex, ALL + (("duplicate_same",) if second else ()), ("00",), 1000,
        crypto or FakeCrypto())]


def test_a_correct_answer_breaks_no_rule():
    assert judge(answer) == []


@pytest.mark.parametrize(("fault", "crypto", "broken"), [
    ({"response_code": "05"}, None, [("de39_allowed", "DE39")]),
    ({"mti": "0110"}, None, [("response_mti", "MTI")]),
    ({"auth_code": None}, None, [("de38_on_approval", "DE38")]),
    ({"stan": "000124"}, None, [("echoed_fields", "DE11")]),
    ({"pan": card("visa_approve_2").pan}, None, [("echoed_fields", "DE2")]),
    ({"rrn": None}, None, [("echoed_fields", "DE37")]),
    ({"emv": None}, None, [("arpc", "DE55.91")]),
    ({}, FakeCrypto(arpc=False), [("arpc", "DE55.91")]),
    ({}, FakeCrypto(mac=False), [("mac", "DE64/DE128")]),
    ({"mac": None}, None, [("mac", "DE64/DE128")]),
])
def test_each_check_names_its_broken_rule(fault, crypto, broken):
    assert judge(lambda r: answer(r, **fault), crypto) == broken


def test_slow_missing_and_duplicate():
    assert judge(answer, latency_ms=1500) == [("time_limit", "response time")]
    assert judge(None) == [("answered", "response")]
    req = request()
    assert judge(answer, second=answer(req, auth_code="999999")) == [
        ("duplicate_same", "DE38")]


def test_a_violation_never_shows_a_clear_pan():
    req = request()
    v = checks.judge_exchange(checks.Exchange(req, answer(req, pan=card(
        "visa_approve_2").pan), 1.0), ["echoed_fields"], (), 1000)
    assert PAN not in str(v[0]) and "476173******" in str(v[0])


def test_reversal_rules():
    orig = request()
    rev = orig.replace(mti="0420", stan="000200", original_data=checks.original_data_of(orig))
    assert checks.reversal_de90(rev, orig) == [] and checks.reversal_amount(rev, orig) == []
    assert [v.field for v in checks.reversal_de90(rev.replace(original_data=None), orig)] \
        == ["DE90"]
    assert [v.field for v in checks.reversal_amount(rev.replace(amount_minor=1), orig)] \
        == ["DE4"]
    assert [v.field for v in checks.mandatory_fields(rev.replace(original_data=None))] \
        == ["DE90"]


def test_unique_ids_and_formats():
    a = request()
    b = a.replace(stan="000124", rrn="112810000124")
    assert checks.unique_ids([a, b]) == []
    assert [v.field for v in checks.unique_ids([a, b.replace(stan=a.stan)])] == ["DE11"]
    assert [v.field for v in checks.unique_ids([a, b.replace(rrn=a.rrn)])] == ["DE37"]
    assert [v.field for v in checks.field_formats(a.replace(transmission_time="1328101010"))
            ] == ["DE7"]


@given(st.text(alphabet="0123456789", min_size=6, max_size=6),
       st.text(alphabet="0123456789", min_size=10, max_size=10))
def test_de90_points_at_its_original(stan, de7):
    orig = request().replace(stan=stan, transmission_time=de7)
    de90 = checks.original_data_of(orig)
    assert len(de90) == 42 and de90[4:10] == stan and de90[10:20] == de7


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):  # a TOML basic string (written here, read by tomllib)
        return '"' + "".join(f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F
                             else "\\" + c if c in '"\\' else c for c in v) + '"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_value(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


cases = st.fixed_dictionaries({
    "request": st.sampled_from(["purchase", "authorization", "cash", "refund", "echo"]),
    "card": st.sampled_from(sorted(BY_NAME)),
    "amount_minor": st.integers(0, 10**12 - 1),
    "entry": st.sampled_from(["chip", "magstripe", "keyed"]),
    "pin": st.booleans(),
    "mandatory": st.booleans(),
    "expect_codes": st.lists(st.text("0123456789NQ", min_size=2, max_size=2), max_size=3),
    "checks": st.lists(st.sampled_from(CHECKS["issuer-host"]), unique=True),
    "time_limit_ms": st.integers(1, 60_000),
    "fields": st.dictionaries(st.integers(2, 128).map(str), st.text(
        st.characters(codec="ascii", categories=["L", "N", "Zs"]), max_size=20), max_size=3),
    "description": st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
})


@given(st.lists(cases, min_size=1, max_size=5))
def test_any_wellformed_suite_round_trips_through_toml(raw):
    text = HEAD
    for i, case in enumerate(raw):
        text += f"\n[[case]]\nname = \"c{i}\"\n" + "".join(
            f"{k} = {toml_value(v)}\n" for k, v in case.items())
    suite = parse_suite(text)
    for i, case in enumerate(raw):
        got = suite.cases[i]
        assert got.name == f"c{i}"
        for k, v in case.items():
            want = ({int(d): x for d, x in v.items()} if k == "fields"
                    else tuple(v) if isinstance(v, list) else v)
            assert getattr(got, k) == want, k


@given(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20).filter(
    lambda k: k not in CASE_KEYS))
def test_any_unknown_case_key_is_refused_by_name(key):
    with pytest.raises(SuiteError, match=f"unknown key '{key}'"):
        parse_suite(HEAD + CASE + f"{key} = 1\n")
