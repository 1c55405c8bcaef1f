"""The schema directory tests use, and hypothesis strategies for the ISO 20022 models."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from hypothesis import strategies as st

from payswitch.codecs import iso20022 as x

REPO = Path(__file__).resolve().parents[2]


def schema_dir() -> Path:
    """PAYSWITCH_ISO20022_SCHEMAS if set, else the team's shared copy beside the repo."""
    env = os.environ.get("PAYSWITCH_ISO20022_SCHEMAS")
    return Path(env) if env else REPO.parent / "shared" / "iso20022"


STORE = x.SchemaStore(schema_dir())

_CHARS = st.characters(codec="utf-8", categories=("L", "N", "Zs", "P"))  # Müller, 東京


def text(n: int):
    return st.text(_CHARS, min_size=1, max_size=n)


ids = text(35)
names = text(140)
_UP = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_UPN = _UP + "0123456789"
bics = st.builds(lambda a, b, c, d: a + b + c + d, st.text(_UPN, min_size=4, max_size=4),
                 st.text(_UP, min_size=2, max_size=2), st.text(_UPN, min_size=2, max_size=2),
                 st.sampled_from(["", "XXX", "A1B"]))
ibans = st.builds(lambda c, d, r: c + d + r, st.text(_UP, min_size=2, max_size=2),
                  st.text("0123456789", min_size=2, max_size=2),
                  st.text(_UPN + "abc", min_size=1, max_size=30))
accounts = st.one_of(st.builds(x.Account, ibans),
                     st.builds(x.Account, text(34), st.just(False)))
currencies = st.sampled_from(["EUR", "USD", "JPY", "BHD", "GBP", "CHF"])
amounts = st.integers(0, 10**13)
dates = st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31))
times = st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 12, 31),
                     timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=2))]))
codes4 = st.sampled_from(["AC01", "AC04", "AM04", "FF01", "DUPL", "NARR", "TM01"])
reasons = st.builds(x.Reason, st.one_of(st.none(), codes4),
                    st.lists(text(105), max_size=2).map(tuple))
reasons_with_code = st.builds(x.Reason, codes4, st.lists(text(105), max_size=2).map(tuple))
remittance = st.one_of(st.none(), text(140))
msg_names = st.sampled_from(["pacs.008.001.08", "pain.001.001.09"])


def some(strategy, lo=1, hi=3):
    return st.lists(strategy, min_size=lo, max_size=hi).map(tuple)


pain001 = st.builds(
    x.Pain001, ids, times, names,
    some(st.builds(x.PaymentInfo, ids, dates, names, accounts, bics, some(st.builds(
        x.Transfer, ids, amounts, currencies, bics, names, accounts, remittance)))))
credit_transfers = st.builds(
    x.CreditTransfer, ids, ids, amounts, currencies, names, accounts, bics, bics, names,
    accounts, remittance, st.sampled_from(["SLEV", "SHAR", "DEBT", "CRED"]))
pacs008 = st.builds(x.Pacs008, ids, times, dates, bics, bics, some(credit_transfers),
                    st.sampled_from(["CLRG", "INDA", "INGA"]))
pacs002 = st.builds(
    x.Pacs002, ids, times, ids, msg_names, st.one_of(st.none(), st.sampled_from(
        ["ACSC", "RJCT", "PART", "ACCP"])), st.one_of(st.none(), reasons),
    some(st.builds(x.TxStatus, ids, st.sampled_from(["ACSC", "RJCT", "PDNG", "ACCP"]),
                   st.one_of(st.none(), ids), st.one_of(st.none(), reasons)), 0, 3),
    st.one_of(st.none(), bics), st.one_of(st.none(), bics))
pacs004 = st.builds(x.Pacs004, ids, times, dates, bics, bics, some(st.builds(
    x.PaymentReturn, ids, ids, msg_names, ids, ids, amounts, currencies, reasons_with_code),
    0, 3))
camt056 = st.builds(x.Camt056, ids, times, bics, bics, some(st.builds(
    x.Recall, ids, ids, msg_names, ids, ids, amounts, currencies, dates, reasons_with_code)))
pacs028 = st.builds(x.Pacs028, ids, times, bics, bics, some(st.builds(
    x.StatusRequest, ids, ids, msg_names, ids, ids), 0, 3))
entries = st.builds(x.Entry, ids, amounts, st.booleans(), dates, st.one_of(st.none(), ids),
                    text(35))


@st.composite
def statements(draw):
    es = draw(some(entries, 0, 4))
    opening = draw(st.integers(-10**13, 10**13))
    closing = opening + sum(e.amount_minor if e.credit else -e.amount_minor for e in es)
    return x.Statement(draw(ids), draw(accounts), draw(currencies), draw(dates), opening,
                       draw(dates), closing, es)


camt053 = st.builds(x.Camt053, ids, times, some(statements()))
camt054 = st.builds(x.Camt054, ids, times, some(st.builds(
    x.Notification, ids, accounts, currencies, some(entries, 0, 3))))

MODELS = {
    "pain.001": pain001, "pacs.008": pacs008, "pacs.002": pacs002, "pacs.004": pacs004,
    "camt.056": camt056, "pacs.028": pacs028, "camt.053": camt053, "camt.054": camt054,
}
