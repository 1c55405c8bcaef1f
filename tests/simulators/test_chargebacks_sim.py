"""The networks' first chargebacks: a configurable share of the sales (never credits),
repeatable per seed, reason codes from the network's list, in the network's format;
settle_day's scheme fee and changed amounts."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.codecs.clearing import base2, ipm
from payswitch.codecs.clearing import chargeback as cbk
from payswitch.codecs.clearing.arn import make_arn
from payswitch.simulators.chargebacks import first_chargebacks, settle_day
from payswitch.simulators.clearing import settle
from tests.clearing.strategies import sample_file, sample_presentment


def visa_file(n: int = 20) -> bytes:
    f = sample_file(n=1)
    ps = tuple(sample_presentment(arn=make_arn(f.sender_id, f.file_date, i),
                                  kind="credit" if i % 5 == 0 else "sale")
               for i in range(1, n + 1))
    return base2.write(dataclasses.replace(f, presentments=ps))


@settings(max_examples=20, deadline=None)
@given(st.floats(0, 1), st.integers(0, 10**6))
def test_a_share_of_sales_is_charged_back_repeatably(share, seed):
    data = visa_file()
    sent = base2.read(data).presentments
    out = cbk.read_base2(first_chargebacks(data, "visa", share=share, seed=seed))
    again = cbk.read_base2(first_chargebacks(data, "visa", share=share, seed=seed))
    assert out == again
    assert all(c.original.kind == "sale" and c.reason_code in cbk.VISA_REASONS
               for c in out.chargebacks)
    assert {c.arn for c in out.chargebacks} <= {p.arn for p in sent}
    if share == 1.0:
        assert len(out.chargebacks) == sum(p.kind == "sale" for p in sent)
    if share == 0.0:
        assert out.chargebacks == ()


def test_mastercard_chargebacks_are_1442s_for_the_named_arns():
    f = dataclasses.replace(sample_file(n=3), presentments=tuple(
        dataclasses.replace(p, pan="5413330089010434") for p in sample_file(n=3).presentments))
    data = ipm.write(f, blocked=True)
    arn = f.presentments[1].arn
    out = cbk.read_ipm(first_chargebacks(data, "mastercard", blocked=True, arns=[arn]),
                       blocked=True)
    assert [c.arn for c in out.chargebacks] == [arn]


def test_settle_day_keeps_a_scheme_fee_and_can_change_an_amount():
    data = visa_file(5)
    plain = settle(data, "visa")
    arn = plain.accepted[1].arn
    day = settle_day(data, "visa", scheme_fee_bp=100, amount_changes={arn: 99_999})
    got = {a.arn: a.amount_minor for a in day.accepted}
    assert got[arn] == 99_999
    fees = sum((-1 if a.kind == "credit" else 1) * round(a.amount_minor / 100)
               for a in day.accepted)
    gross = sum((-1 if a.kind == "credit" else 1) * (a.amount_minor - a.interchange_minor)
                for a in day.accepted)
    assert day.scheme_fee_minor == {"840": fees}
    assert day.net_minor == {"840": gross - fees}
