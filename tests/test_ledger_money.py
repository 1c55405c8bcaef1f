from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payswitch.ledger import money
from payswitch.ledger.types import LedgerError

ccys = st.sampled_from(["USD", "EUR", "JPY", "BHD", "KWD", "ISK", "GBP"])
rates = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("100000"), places=6,
                    allow_nan=False, allow_infinity=False)
amounts = st.integers(0, 10**15)


def test_exponents():
    assert money.exponent("JPY") == 0
    assert money.exponent("USD") == 2
    assert money.exponent(48) == 3  # BHD
    assert money.currency("840").alpha == "USD"
    with pytest.raises(LedgerError):
        money.currency("XXX")


def test_half_even_examples():
    # 1.005 USD -> 1.00 (even), 1.015 -> 1.02, at rate 1 from a 3-decimal currency
    assert money.convert(1005, "BHD", "USD", Decimal(1)) == 100
    assert money.convert(1015, "BHD", "USD", Decimal(1)) == 102
    assert money.convert(1025, "BHD", "USD", Decimal(1)) == 102
    # 150 cents at 1 JPY/USD... 1.50 USD -> 2 JPY (even), 2.50 -> 2, 3.50 -> 4
    assert money.convert(150, "USD", "JPY", Decimal(1)) == 2
    assert money.convert(250, "USD", "JPY", Decimal(1)) == 2
    assert money.convert(350, "USD", "JPY", Decimal(1)) == 4
    # 10.00 EUR at 1.0865 -> 10.865 USD -> 10.86
    assert money.convert(1000, "EUR", "USD", Decimal("1.0865")) == 1086
    assert money.convert(12345, "USD", "JPY", Decimal("151.237")) == 18670


@given(amounts, ccys, ccys, rates)
def test_convert_matches_fraction_arithmetic(amount, src, dst, rate):
    """Against exact rational arithmetic with an independent HALF_EVEN."""
    from fractions import Fraction

    if rate <= 0:
        return
    exact = Fraction(amount, 10 ** money.exponent(src)) * Fraction(rate) * \
        10 ** money.exponent(dst)
    floor = exact.numerator // exact.denominator
    rem = exact - floor
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and floor % 2 == 1):
        floor += 1
    assert money.convert(amount, src, dst, rate) == floor


@given(amounts, ccys)
def test_rate_one_same_currency_is_identity(amount, c):
    assert money.convert(amount, c, c, Decimal(1)) == amount


@given(amounts, ccys, ccys, rates, rates)
def test_monotonic_in_rate(amount, src, dst, r1, r2):
    lo, hi = sorted([r1, r2])
    if lo <= 0:
        return
    assert money.convert(amount, src, dst, lo) <= money.convert(amount, src, dst, hi)


@given(st.integers(0, 9), st.integers(1, 9_999_999))
def test_de10(places, digits):
    rate = money.rate_from_de10(f"{places}{digits:07d}")
    assert rate == Decimal(digits).scaleb(-places)
    assert rate.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN) == rate


def test_bad_inputs():
    with pytest.raises(LedgerError):
        money.convert(1, "USD", "EUR", Decimal("-1"))
    with pytest.raises(LedgerError):
        money.convert(1, "USD", "EUR", Decimal("NaN"))
    with pytest.raises(LedgerError):
        money.convert(1.5, "USD", "EUR", Decimal(1))
    with pytest.raises(LedgerError):
        money.rate_from_de10("12ab")
