"""The ARN check digit against cardutil's independent Luhn implementation."""

from datetime import date

from cardutil.card import calculate_check_digit
from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.clearing.arn import arn_ok, luhn_digit, make_arn


@given(st.text("0123456789", min_size=22, max_size=22))
def test_check_digit_is_cardutils_luhn(body):
    assert luhn_digit(body) == calculate_check_digit(body)


def test_arn_layout():
    arn = make_arn("412345", date(2026, 2, 1), 42)
    # format 2 | BIN | YDDD (2026, day 032) | 11-digit sequence | check digit
    assert arn[:22] == "2" + "412345" + "6032" + "00000000042"
    assert len(arn) == 23 and arn[-1] == calculate_check_digit(arn[:22])
    assert arn_ok(arn)


@given(st.integers(0, 21), st.integers(1, 9))
def test_any_single_digit_change_is_caught(pos, delta):
    arn = make_arn("412345", date(2026, 2, 1), 42)
    bad = arn[:pos] + str((int(arn[pos]) + delta) % 10) + arn[pos + 1:]
    assert not arn_ok(bad)
