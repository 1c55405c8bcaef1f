"""Ledger invariant, by hypothesis: whatever authorizations happened and whatever
sequence of cut-offs and re-runs, every approved, not fully reversed off-us
authorization up to the latest cut-off is presented exactly once with its final
amount, and nothing else is ever presented. Each example has a schema of its own."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.codecs.clearing import base2, ipm
from payswitch.ledger import Ledger
from payswitch.ledger.clearing_build import Network, build, cutoff_ns
from tests.clearing import ledgerkit as kit

D0 = date(2026, 11, 23)
NETS = [Network("visa", "base2", "412345"), Network("mastercard", "ipm", "512345")]
FATES = ("pending", "post_full", "post_partial", "void", "expire", "onus", "declined")

auths = st.lists(st.tuples(st.sampled_from(FATES), st.integers(0, 3),
                           st.sampled_from(["visa", "mastercard"]),
                           st.integers(2, 10**6)), max_size=12)
runs = st.lists(st.integers(0, 4), min_size=1, max_size=5)


def _expected(items, last_cutoff):
    """payment id -> final amount, for what must have been presented by then."""
    out = {}
    for pid, (fate, day, _link, amount) in enumerate(items, start=1):
        created = datetime(2026, 11, 23, 10) + timedelta(days=day)
        if fate in ("pending", "post_full", "post_partial") and \
                kit.Clock(created).ns < last_cutoff:
            out[pid] = amount // 2 if fate == "post_partial" else amount
    return out


def _apply(led, clock, items) -> None:
    kit.setup_accounts(led)
    for pid, (fate, day, link, amount) in sorted(enumerate(items, start=1),
                                                 key=lambda t: t[1][1]):
        clock.set(datetime(2026, 11, 23, 10) + timedelta(days=day))
        if fate == "declined":
            kit.decline(led, pid)
            continue
        kit.authorize(led, pid, amount, link=None if fate == "onus" else link,
                      timeout_s=60 if fate == "expire" else 30 * 24 * 3600)
        if fate == "post_full":
            kit.post(led, pid)
        elif fate == "post_partial":
            kit.post(led, pid, amount // 2)
        elif fate == "void":
            kit.void(led, pid)
        elif fate == "expire":
            clock.set(datetime(2026, 11, 23, 11) + timedelta(days=day))
            led.expire_pending()


@settings(max_examples=25)
@given(items=auths, days=runs)
def test_presented_exactly_once_with_final_amount(pg_session_dsn, tmp_path_factory,
                                                  items, days):
    schema = "clr_" + uuid.uuid4().hex[:12]
    out = tmp_path_factory.mktemp("files")
    with psycopg.connect(pg_session_dsn, autocommit=True) as admin:
        admin.execute(f"create schema {schema}")
    try:
        clock = kit.Clock(datetime(2026, 11, 23, 10))
        with Ledger(pg_session_dsn, mac=kit.MAC, clock_ns=clock, schema=schema,
                    migrate=True) as led:
            _apply(led, clock, items)
        with psycopg.connect(pg_session_dsn, autocommit=True,
                             options=f"-c search_path={schema}") as conn:
            for d in days:
                build(conn, NETS, D0 + timedelta(days=d), out, kit.details())
            rows = conn.execute("select payment_id, amount_minor from presentments").fetchall()
        presented = {u.int: a for u, a in rows}
        assert presented == _expected(items, cutoff_ns(D0 + timedelta(days=max(days))))
        in_files = []
        for path in out.iterdir():
            f = base2.read(path.read_bytes()) if path.suffix == ".ctf" else \
                ipm.read(path.read_bytes())
            in_files += [(p.pan, p.amount_minor) for p in f.presentments]
        assert sorted(in_files) == sorted(
            (kit.card(pid, items[pid - 1][2]).pan, a) for pid, a in presented.items())
    finally:
        with psycopg.connect(pg_session_dsn, autocommit=True) as admin:
            admin.execute(f"drop schema {schema} cascade")
