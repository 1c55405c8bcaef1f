"""NACHA reader and writer: hand-laid samples, exact errors, identity, fuzz, achkit."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import achkit
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacha_strategies import files

from payswitch.codecs import nacha
from payswitch.codecs.nacha import NachaError, Relaxations

DATA = Path(__file__).parent / "data" / "nacha"


def sample(name: str) -> str:
    return (DATA / name).read_text()


def lines_of(name: str) -> list[str]:
    return sample(name).splitlines()


def joined(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def replace(lines: list[str], lineno: int, col: int, new: str) -> str:
    """Text with columns col.. (1-based, NACHA style) of line lineno replaced."""
    out = list(lines)
    ln = out[lineno - 1]
    out[lineno - 1] = ln[:col - 1] + new + ln[col - 1 + len(new):]
    return joined(out)


# -- hand-laid samples (tests/codecs/data/nacha, laid out by the NACHA record formats) --

def test_payroll_sample_reads_every_field():
    f = nacha.read(sample("payroll.ach"))
    assert (f.immediate_destination, f.immediate_origin) == ("091000019", "1234567890")
    assert f.creation_date == dt.date(2026, 11, 28) and f.creation_time == "0930"
    assert [b.sec_code for b in f.batches] == ["PPD", "WEB", "CCD"]
    assert [b.service_class for b in f.batches] == [220, 225, 220]
    jane, john = f.batches[0].entries
    assert (jane.transaction_code, jane.routing, jane.account, jane.amount) == \
        (22, "011401533", "0072", 124050)
    assert john.transaction_code == 32 and john.individual_name == "JOHN Q PUBLIC"
    web = f.batches[1].entries[0]
    assert (web.transaction_code, web.discretionary_data, web.amount) == (27, "S", 2599)
    ccd = f.batches[2].entries[0]
    assert ccd.addenda == (nacha.PaymentAddenda("RMR*IV*2026-0042**5000.00\\"),)
    assert f.batches[0].effective_date == dt.date(2026, 11, 30)


def test_return_sample_reads_reason_codes_and_original_traces():
    f = nacha.read(sample("returns.ach"))
    (b,) = f.batches
    assert b.settlement_date == "335"
    r01, r03 = (e.addenda[0] for e in b.entries)
    assert r01 == nacha.ReturnAddenda("R01", "091000010000003", "09100001", "091000010000101")
    assert (r03.reason_code, r03.original_trace, r03.addenda_info) == \
        ("R03", "091000010000001", "NO ACCOUNT")
    assert [e.transaction_code for e in b.entries] == [26, 21]


def test_noc_sample_reads_change_codes_and_corrected_data():
    f = nacha.read(sample("noc.ach"))
    c01, c02 = (e.addenda[0] for e in f.batches[0].entries)
    assert (c01.change_code, c01.corrected_data, c01.original_trace) == \
        ("C01", "8800112299", "091000010000004")
    assert (c02.change_code, c02.corrected_data) == ("C02", "011401533")
    assert f.creation_time == ""


@pytest.mark.parametrize("name", ["payroll.ach", "returns.ach", "noc.ach"])
def test_samples_write_back_byte_for_byte(name):
    assert nacha.write(nacha.read(sample(name))) == sample(name)


def test_crlf_and_unbroken_files_read_the_same():
    text = sample("payroll.ach")
    want = nacha.read(text)
    assert nacha.read(text.replace("\n", "\r\n").encode()) == want
    assert nacha.read(text.replace("\n", "")) == want


# -- errors name the line, record type and field --------------------------------------

@pytest.mark.parametrize("lineno,col,new,field", [
    (3, 4, "011401534", "routing"),            # check digit 3 -> 4
    (5, 11, "0003240156", "entry_hash"),       # batch control hash off by one
    (5, 33, "000000222816", "total_credit"),   # batch control credit total
    (5, 5, "000003", "entry_count"),
    (13, 8, "000003", "block_count"),          # file control
    (3, 30, "00001240x0", "amount"),
    (7, 77, "X", "discretionary_data"),        # WEB payment type must be R or S
    (7, 2, "22", "transaction_code"),          # credit entry in a debits-only batch
    (4, 80, "091000020000002", "trace_number"),  # not the ODFI's prefix
    (4, 80, "091000010000001", "trace_number"),  # not ascending within the batch
    (11, 88, "0000005", "entry_sequence"),     # addenda 05 sequence != trace
    (1, 4, " 091000018", "immediate_destination"),
    (9, 88, "0000002", "batch_number"),        # batch numbers must ascend
    (2, 70, "261331", "effective_date"),
])
def test_error_names_line_record_type_and_field(lineno, col, new, field):
    text = replace(lines_of("payroll.ach"), lineno, col, new)
    with pytest.raises(NachaError) as e:
        nacha.read(text)
    assert e.value.line == lineno and e.value.field == field
    rtype = text.splitlines()[lineno - 1][0]
    assert e.value.record_type == rtype
    assert str(e.value).startswith(f"line {lineno}, ")


def test_error_text_never_holds_the_account_number():
    text = replace(lines_of("payroll.ach"), 3, 4, "011401534")
    with pytest.raises(NachaError) as e:
        nacha.read(text)
    assert "0072" not in str(e.value) and "011401534" not in str(e.value)


def test_short_record_missing_padding_and_bad_padding():
    ls = lines_of("payroll.ach")
    with pytest.raises(NachaError, match=r"^line 4, entry detail \(6\): record is 93"):
        nacha.read(joined(ls[:3] + [ls[3][:-1]] + ls[4:]))
    with pytest.raises(NachaError) as e:
        nacha.read(joined(ls[:-1]))
    assert e.value.field == "block_count" and e.value.line == 19
    with pytest.raises(NachaError) as e:
        nacha.read(replace(ls, 20, 1, "8"))
    assert (e.value.line, e.value.field) == (20, "padding")


def test_return_and_noc_need_their_addenda():
    ls = lines_of("returns.ach")
    with pytest.raises(NachaError) as e:  # R01 entry without its 99 addenda
        nacha.read(replace(ls, 3, 79, "0"))
    assert (e.value.line, e.value.field) == (3, "addenda_indicator")
    with pytest.raises(NachaError) as e:  # the 99 must echo its entry's trace number
        nacha.read(replace(ls, 4, 80, "091000010000109"))
    assert (e.value.line, e.value.field) == (4, "trace_number")
    noc = lines_of("noc.ach")
    with pytest.raises(NachaError) as e:
        nacha.read(replace(noc, 4, 4, "C99"))
    assert (e.value.line, e.value.field) == (4, "change_code")


# -- relaxations: off by default, each lets through exactly its kind of file ----------

def test_relaxations_are_off_by_default_and_each_allows_its_case():
    assert Relaxations() == nacha.STRICT
    ls = lines_of("payroll.ach")
    custom_trace = replace(ls, 4, 80, "123456780000002")
    bad_origin = replace(ls, 1, 14, "ACME CORP ")
    noc = lines_of("noc.ach")
    empty_correction = replace(noc, 4, 36, " " * 29)
    for text, relax in [(custom_trace, Relaxations(custom_trace_numbers=True)),
                        (bad_origin, Relaxations(origin_destination=True)),
                        (empty_correction, Relaxations(noc_checks=True))]:
        with pytest.raises(NachaError):
            nacha.read(text)
        assert nacha.read(text, relax)
        others = [r for r in (Relaxations(custom_trace_numbers=True),
                              Relaxations(origin_destination=True),
                              Relaxations(noc_checks=True)) if r != relax]
        for other in others:
            with pytest.raises(NachaError):
                nacha.read(text, other)


def test_writer_refuses_a_field_that_does_not_fit():
    f = nacha.read(sample("payroll.ach"))
    b = f.batches[0]
    long_name = dataclasses.replace(b.entries[0], individual_name="X" * 23)
    bad = dataclasses.replace(f, batches=(dataclasses.replace(b, entries=(long_name,)),))
    with pytest.raises(NachaError) as e:
        nacha.write(bad)
    assert e.value.field == "individual_name"


# -- properties ------------------------------------------------------------------------

@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(files())
def test_write_then_read_is_identity(f):
    text = nacha.write(f)
    lines = text.splitlines()
    assert all(len(ln) == 94 for ln in lines) and len(lines) % 10 == 0
    assert nacha.read(text) == f


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(files(), st.data())
def test_fuzzed_lines_read_or_fail_naming_the_line(f, data):
    lines = nacha.write(f).splitlines()
    lineno = data.draw(st.integers(1, len(lines)))
    ln = lines[lineno - 1]
    kind = data.draw(st.sampled_from(["char", "cut", "dup", "drop"]))
    if kind == "char":
        col = data.draw(st.integers(0, 93))
        ch = data.draw(st.characters(max_codepoint=0x7F))
        lines[lineno - 1] = ln[:col] + ch + ln[col + 1:]
    elif kind == "cut":
        lines[lineno - 1] = ln[:data.draw(st.integers(0, 93))]
    elif kind == "dup":
        lines.insert(lineno, ln)
    else:
        del lines[lineno - 1]
    text = "\n".join(lines) + "\n"
    try:
        nacha.read(text)
    except NachaError as e:
        assert e.line is not None and 1 <= e.line <= len(text.split("\n"))
        assert str(e).startswith(f"line {e.line}")


# -- cross-check against achkit (an independent NACHA library) --------------------------

@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(files())
def test_achkit_reads_what_we_write(f):
    parsed = achkit.parse(nacha.write(f))
    assert parsed["destination_routing"] == f.immediate_destination
    assert [b["sec"] for b in parsed["batches"]] == [b.sec_code for b in f.batches]
    for ours, theirs in zip(f.batches, parsed["batches"], strict=True):
        assert theirs["control"]["entry_addenda_count"] == \
            sum(1 + len(e.addenda) for e in ours.entries)
        assert [(e["txn_code"], e["routing"], e["amount_cents"], e["trace_number"],
                 len(e["addenda"])) for e in theirs["entries"]] == \
            [(e.transaction_code, e.routing, e.amount, e.trace_number, len(e.addenda))
             for e in ours.entries]
    # achkit counts only codes x2/x3 and x7/x8 in its totals (no returns, NOCs, zero-dollar
    # entries), so its full validation is asked only of files with no other codes.
    if all(e.transaction_code % 5 in (2, 3) for e in f.entries()):
        assert achkit.validate(nacha.write(f))["ok"]


@pytest.mark.parametrize("name", ["payroll.ach", "noc.ach"])
def test_achkit_validates_the_samples(name):
    assert achkit.validate(sample(name)) == {"ok": True, "errors": []}


def test_we_read_what_achkit_writes():
    af = achkit.AchFile.create(origin_dfi="091000019", company_id="1234567890",
                               destination_routing="021000021",
                               creation_date=dt.datetime(2026, 11, 28, 9, 30))
    b = af.batch(sec="PPD", description="PAYROLL", effective_date="2026-11-30")
    b.credit(name="Jane Doe", routing="011401533", account="0072", amount_cents=124050)
    b.debit(name="ACME LLC", routing="091000019", account="1899", amount_cents=124050,
            addenda="INVOICE 42")
    f = nacha.read(af.render())
    (batch,) = f.batches
    assert batch.service_class == 200 and batch.effective_date == dt.date(2026, 11, 30)
    assert [(e.transaction_code, e.routing, e.account, e.amount) for e in batch.entries] == \
        [(22, "011401533", "0072", 124050), (27, "091000019", "1899", 124050)]
    assert batch.entries[1].addenda == (nacha.PaymentAddenda("INVOICE 42"),)


def test_entry_hash_keeps_the_low_ten_digits_like_achkit():
    """120 entries at RDFI 99999999: the hash sum has 11 digits; both sides keep ten."""
    routing = "99999999" + str(nacha.check_digit("99999999"))
    entries = tuple(nacha.Entry(22, routing, f"A{i}", 100, "", "", f"09100001{i + 1:07d}")
                    for i in range(120))
    batch = nacha.Batch(220, "ACME", "1234567890", "PPD", "PAYROLL", dt.date(2026, 11, 30),
                        "09100001", 1, entries)
    text = nacha.write(nacha.NachaFile("091000019", "1234567890", dt.date(2026, 11, 28),
                                       batches=(batch,)))
    total = 120 * 99999999
    assert len(str(total)) == 11
    control = [ln for ln in text.splitlines() if ln.startswith("9") and ln != "9" * 94][0]
    assert control[21:31] == str(total)[-10:]
    assert achkit.validate(text) == {"ok": True, "errors": []}
