"""The networks' clearing side: rejects with reasons, interchange, settlement report."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.clearing import base2, ipm
from payswitch.codecs.clearing.arn import make_arn
from payswitch.simulators.clearing import DEFAULT_FEES, FeeRule, interchange, rule_for, settle
from tests.clearing.strategies import sample_file, sample_presentment

D = date(2026, 11, 27)
VISA_PAN = "4761739001010010"  # Luhn-valid test card
MC_PAN = "5413330089010012"


def arn(i: int) -> str:
    return make_arn("412345", D, i)


def test_good_visa_file_is_priced_and_settled():
    sale = sample_presentment(arn=arn(1), amount_minor=10_000, product_id="")
    credit = sample_presentment(arn=arn(2), kind="credit", amount_minor=2_000, product_id="")
    report = settle(base2.write(sample_file(sale, credit)), "visa")
    assert report.file_error is None and not report.rejected
    # grocery 5411: 1.05 % + 5 -> 105 + 5 = 110 on the sale; 21 + 5 = 26 on the credit
    assert [a.interchange_minor for a in report.accepted] == [110, 26]
    assert report.net_minor == {"840": (10_000 - 110) - (2_000 - 26)}
    assert report.interchange_minor == {"840": 110 - 26}


def test_each_bad_record_is_rejected_with_its_reason_and_the_rest_accepted():
    good = sample_presentment(arn=arn(1))
    items = [
        good,
        replace(good, arn=arn(2), pan=VISA_PAN[:-1] + "1"),           # Luhn
        replace(good, arn=arn(3), pan=MC_PAN),                         # not Visa
        replace(good, arn=arn(1)),                                     # duplicate ARN
        replace(good, arn=arn(5), amount_minor=0),
        replace(good, arn=arn(6), currency="392"),
        replace(good, arn=arn(7), txn_date=D - timedelta(days=45)),
        replace(good, arn=make_arn("499999", D, 8)),                   # another acquirer
    ]
    report = settle(base2.write(sample_file(*items)), "visa")
    assert [(r.index, r.reason) for r in report.rejected] == [
        (2, "invalid_account"), (3, "not_our_card"), (4, "duplicate_arn"),
        (5, "zero_amount"), (6, "currency_not_supported"), (7, "late_presentment"),
        (8, "bin_mismatch")]
    assert [a.arn for a in report.accepted] == [arn(1)]


def test_mastercard_blocked_file_and_product_pricing():
    p = sample_presentment(pan=MC_PAN, arn=arn(1), mcc="5999", product_id="MDS",
                           amount_minor=12_345)
    report = settle(ipm.write(sample_file(p), blocked=True), "mastercard", blocked=True)
    # MDS debit: 0.55 % of 123.45 = 67.8975 -> 68, + 5
    assert [a.interchange_minor for a in report.accepted] == [73]
    assert report.net_minor == {"840": 12_345 - 73}


def test_a_file_that_does_not_read_is_rejected_whole_naming_the_record():
    data = bytearray(base2.write(sample_file(n=2)))
    data[7 * 168 + 110] = ord("9")  # TC91 source amount (TC90, then 2 x TCR0+1+5)
    report = settle(bytes(data), "visa")
    assert report.file_error and "record" in report.file_error
    assert not report.accepted and report.net_minor == {}


def test_most_specific_fee_rule_wins():
    p = sample_presentment(mcc="5411", product_id="F")
    assert rule_for(p, DEFAULT_FEES) == FeeRule("5411", "F", 50, 0)
    assert rule_for(replace(p, product_id="X"), DEFAULT_FEES).rate_bp == 105
    assert rule_for(replace(p, mcc="7011", product_id="MCC"), DEFAULT_FEES).rate_bp == 190
    assert rule_for(replace(p, mcc="7011", product_id=""), DEFAULT_FEES).rate_bp == 180


@given(st.integers(0, 10**12 - 1), st.sampled_from(DEFAULT_FEES))
def test_interchange_rounds_half_even_as_decimal_does(amount, rule):
    p = sample_presentment(amount_minor=amount, mcc=rule.mcc or "7011",
                           product_id=rule.product or "Q")
    expect = (Decimal(amount) * rule_for(p, DEFAULT_FEES).rate_bp / 10_000).quantize(
        Decimal(1), rounding=ROUND_HALF_EVEN)
    assert interchange(p) == int(expect) + rule_for(p, DEFAULT_FEES).fixed_minor


@given(st.lists(st.tuples(st.sampled_from(["sale", "credit", "cash"]),
                          st.integers(1, 10**9)), max_size=12))
def test_net_is_the_signed_sum_of_accepted(items):
    ps = [sample_presentment(arn=arn(i), kind=k, amount_minor=a)
          for i, (k, a) in enumerate(items)]
    report = settle(base2.write(sample_file(*ps) if ps else sample_file(n=0)), "visa")
    assert len(report.accepted) + len(report.rejected) == len(ps)
    expect = sum((-1 if a.kind == "credit" else 1) * (a.amount_minor - a.interchange_minor)
                 for a in report.accepted)
    assert report.net_minor.get("840", 0) == expect
