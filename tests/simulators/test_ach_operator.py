"""ACH operator simulator: acknowledgements, settlement windows, returns and NOCs that
our strict reader accepts and that point back at the right original entries."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.codecs import nacha
from payswitch.simulators.ach import AchOperator, OperatorConfig, settlement_date

PAYROLL = (Path(__file__).parents[1] / "codecs" / "data" / "nacha" / "payroll.ach").read_text()
FRI_NOON = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)  # a Friday
CUTOFF = dt.time(14, 45)


def test_named_accounts_get_their_returns_and_nocs():
    op = AchOperator(OperatorConfig(outcomes={
        "000123456789": "R01",   # the WEB debit
        "0072": "R03",           # a PPD credit
        "8800112233": "C01",     # the CCD credit
        "55512345": "C02"}))     # the other PPD credit
    ans = op.submit(PAYROLL, dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC))  # Saturday
    assert ans.ack.accepted and (ans.ack.batches, ans.ack.entries) == (3, 4)
    assert (ans.ack.total_debit, ans.ack.total_credit) == (2599, 722815)
    # effective Mon 2026-11-30 for every batch: settles that day
    assert set(ans.settlement_dates.values()) == {dt.date(2026, 11, 30)}
    assert ans.returns_date == dt.date(2026, 12, 2)

    returns = nacha.read(nacha.write(ans.returns))  # bytes our strict reader accepts
    got = {(e.addenda[0].reason_code, e.addenda[0].original_trace, e.transaction_code,
            e.amount) for e in returns.entries()}
    assert got == {("R01", "091000010000003", 26, 2599), ("R03", "091000010000001", 21, 124050)}
    assert returns.immediate_destination == "091000019"  # back to our ODFI

    nocs = nacha.read(nacha.write(ans.nocs))
    assert [b.sec_code for b in nocs.batches] == ["COR", "COR"]
    changes = {e.addenda[0].change_code: e.addenda[0] for e in nocs.entries()}
    assert changes["C01"].original_trace == "091000010000004"
    assert changes["C01"].corrected_data == "88001122339"
    assert changes["C02"].original_trace == "091000010000002"
    assert nacha.is_valid_routing(changes["C02"].corrected_data)
    assert changes["C02"].corrected_data != "021000021"
    assert all(e.amount == 0 for e in nocs.entries())


def test_debit_only_codes_are_not_put_on_credits():
    op = AchOperator(OperatorConfig(outcomes={"0072": "R10", "55512345": "R01",
                                              "8800112233": "R29"}))
    ans = op.submit(PAYROLL, FRI_NOON)
    assert ans.ack.accepted and ans.returns is None and ans.nocs is None


def test_unreadable_file_is_rejected_with_the_readers_error():
    lines = PAYROLL.splitlines()
    lines[4] = lines[4][:10] + "0003240156" + lines[4][20:]  # wrong batch entry hash
    ans = AchOperator().submit("\n".join(lines) + "\n", FRI_NOON)
    assert not ans.ack.accepted and ans.returns is None
    assert ans.ack.reason.startswith("line 5, batch control (8)")


def test_settlement_windows():
    fri = dt.date(2026, 11, 27)
    assert settlement_date(fri, FRI_NOON, CUTOFF) == fri  # same day, before the cut-off
    late = FRI_NOON.replace(hour=15)
    assert settlement_date(fri, late, CUTOFF) == dt.date(2026, 11, 30)  # next banking day
    assert settlement_date(dt.date(2026, 12, 3), FRI_NOON, CUTOFF) == dt.date(2026, 12, 3)
    sat = dt.date(2026, 11, 28)
    assert settlement_date(sat, FRI_NOON, CUTOFF) == dt.date(2026, 11, 30)
    # a time in another zone is compared in UTC: 16:00+02:00 is 14:00 UTC
    tz = dt.timezone(dt.timedelta(hours=2))
    assert settlement_date(fri, dt.datetime(2026, 11, 27, 16, 0, tzinfo=tz), CUTOFF) == fri


def _big_file(n: int) -> nacha.NachaFile:
    f = nacha.read(PAYROLL)
    ppd, web = f.batches[0], f.batches[1]
    credits = tuple(dataclasses.replace(ppd.entries[0], account=f"C{i:06d}",
                                        trace_number=f"09100001{i + 1:07d}")
                    for i in range(n))
    debits = tuple(dataclasses.replace(web.entries[0], account=f"D{i:06d}",
                                       trace_number=f"09100001{n + i + 1:07d}")
                   for i in range(n))
    return dataclasses.replace(f, batches=(dataclasses.replace(ppd, entries=credits),
                                           dataclasses.replace(web, entries=debits)))


BIG = nacha.write(_big_file(100))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([0.05, 0.1, 0.3]), st.sampled_from([0.0, 0.1]))
def test_random_share_is_repeatable_and_well_formed(seed, share, noc_share):
    cfg = OperatorConfig(seed=seed, return_share=share, noc_share=noc_share)
    a, b = AchOperator(cfg).submit(BIG, FRI_NOON), AchOperator(cfg).submit(BIG, FRI_NOON)
    assert a == b  # same seed, same answer
    original = {e.trace_number: e for e in nacha.read(BIG).entries()}
    returned = nacha.read(nacha.write(a.returns)).entries() if a.returns else []
    traces = [e.addenda[0].original_trace for e in returned]
    assert len(traces) == len(set(traces)) and set(traces) <= set(original)
    assert len(traces) <= 200 * share * 3  # 200 entries: about share * 200 come back
    if share >= 0.1:  # none at all would have odds below 1e-9
        assert traces
    for e in returned:
        orig = original[e.addenda[0].original_trace]
        assert e.amount == orig.amount and e.account == orig.account
        if e.addenda[0].reason_code in ("R01", "R10", "R29"):
            assert orig.transaction_code == 27  # debit-only codes only on the debits
    if a.nocs:
        changed = {e.addenda[0].original_trace for e in nacha.read(nacha.write(a.nocs)).entries()}
        assert not changed & set(traces)  # an entry is returned or changed, not both
