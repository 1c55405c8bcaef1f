"""Hypothesis strategies for valid clearing files (what both formats carry)."""

from __future__ import annotations

import string
from datetime import date, timedelta

import pycountry
from hypothesis import strategies as st

from payswitch.codecs.clearing.arn import make_arn
from payswitch.codecs.clearing.model import KINDS, MAX_AMOUNT_MINOR, ClearingFile, Presentment

TEXT = string.ascii_letters + string.digits + " .,&'/-"
UPPER = string.ascii_uppercase + string.digits
COUNTRIES = sorted(c.alpha_3 for c in pycountry.countries)


def digits(lo: int, hi: int | None = None) -> st.SearchStrategy[str]:
    return st.text(string.digits, min_size=lo, max_size=lo if hi is None else hi)


def text(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.text(TEXT, min_size=lo, max_size=hi).filter(
        lambda s: s == s.strip() and (lo == 0 or s))


@st.composite
def presentments(draw, file_date: date) -> Presentment:
    # Base II carries MMDD only: purchases lie within the year before the file date.
    txn = file_date - timedelta(days=draw(st.integers(0, 300)))
    return Presentment(
        kind=draw(st.sampled_from(KINDS)),
        pan=draw(digits(13, 19).filter(lambda p: not (len(p) == 19 and p.endswith("000")))),
        amount_minor=draw(st.integers(0, MAX_AMOUNT_MINOR)),
        currency=draw(digits(3)), txn_date=txn,
        arn=make_arn(draw(digits(6)), file_date, draw(st.integers(0, 10**11 - 1)),
                     draw(st.sampled_from("2745"))),
        auth_code=draw(st.text(UPPER, min_size=6, max_size=6)), mcc=draw(digits(4)),
        merchant_name=draw(text(1, 22)), merchant_city=draw(text(1, 13)),
        merchant_country=draw(st.sampled_from(COUNTRIES)),
        terminal_id=draw(text(0, 8)), merchant_id=draw(text(0, 15)),
        transaction_id=draw(st.one_of(st.just(""), digits(15))),
        auth_amount_minor=draw(st.one_of(st.none(), st.integers(0, MAX_AMOUNT_MINOR))),
        product_id=draw(st.text(UPPER, min_size=0, max_size=3)),
    )


@st.composite
def clearing_files(draw, max_size: int = 8) -> ClearingFile:
    # two-digit years: 2001-2068 reads the same under the POSIX %y pivot (cardutil)
    file_date = draw(st.dates(date(2001, 1, 1), date(2068, 12, 31)))
    items = draw(st.lists(presentments(file_date), max_size=max_size))
    return ClearingFile(sender_id=draw(digits(6)), file_date=file_date,
                        file_seq=draw(st.integers(1, 999)), presentments=tuple(items),
                        test=draw(st.booleans()))


def sample_presentment(**changes) -> Presentment:
    base = dict(kind="sale", pan="4761739001010010", amount_minor=1234, currency="840",
                txn_date=date(2026, 11, 26), arn=make_arn("412345", date(2026, 11, 27), 7),
                auth_code="A1B2C3", mcc="5411", merchant_name="CORNER SHOP",
                merchant_city="SPRINGFIELD", merchant_country="USA", terminal_id="TERM0001",
                merchant_id="MERCHANT0000001", transaction_id="123456789012345",
                auth_amount_minor=1500, product_id="MCC")
    base.update(changes)
    return Presentment(**base)


def sample_file(*items: Presentment, n: int = 2) -> ClearingFile:
    items = items or tuple(sample_presentment(arn=make_arn("412345", date(2026, 11, 27), i))
                           for i in range(n))
    return ClearingFile(sender_id="412345", file_date=date(2026, 11, 27), file_seq=1,
                        presentments=tuple(items))
