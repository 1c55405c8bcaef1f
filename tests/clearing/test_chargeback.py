"""Chargeback files (Visa TC15/16/17, Mastercard 1442/450): write -> read is identity
for valid files (hypothesis); a bad reason, a truncated file, a trailer that does not
match and a presentment in a chargeback file are errors naming the record."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.clearing import base2, ipm
from payswitch.codecs.clearing import chargeback as cbk
from payswitch.codecs.clearing.errors import ClearingError
from tests.clearing.strategies import clearing_files, sample_file


@st.composite
def chargeback_files(draw, network: str):
    f = draw(clearing_files())
    reasons = sorted(cbk.VISA_REASONS if network == "visa" else cbk.MASTERCARD_REASONS)
    return cbk.ChargebackFile(f.sender_id, f.file_date, f.file_seq, test=f.test,
                              chargebacks=tuple(cbk.Chargeback(p, draw(st.sampled_from(reasons)))
                                                for p in f.presentments))


@given(chargeback_files("visa"))
def test_visa_tc15_round_trip(f):
    data = cbk.write_base2(f)
    assert cbk.read_base2(data) == f
    assert all(data[i:i + 2] in (b"90", b"91", b"92", b"15", b"16", b"17")
               for i in range(0, len(data), 168))


@given(chargeback_files("mastercard"), st.booleans())
def test_mastercard_1442_round_trip(f, blocked):
    assert cbk.read_ipm(cbk.write_ipm(f, blocked=blocked), blocked=blocked) == f


def one(network: str) -> cbk.ChargebackFile:
    f = sample_file(n=2)
    reason = "83" if network == "visa" else "4837"
    return cbk.ChargebackFile(f.sender_id, f.file_date, 1, chargebacks=tuple(
        cbk.Chargeback(p, reason) for p in f.presentments))


def test_known_positions_tc15_reason_and_1442_de25():
    data = cbk.write_base2(one("visa"))
    tcr0 = data[168:336].decode()
    assert tcr0[:2] == "15" and tcr0[147:149] == "83"
    f = one("mastercard")
    recs = ipm.vbs.read_vbs(cbk.write_ipm(f), blocked=False)
    fields = ipm.decode_record(recs[1], 2)
    assert (fields["t"], fields["24"], fields["25"], fields["31"]) == (
        "1442", "450", "4837", f.chargebacks[0].arn)


@pytest.mark.parametrize("network", ["visa", "mastercard"])
def test_an_unknown_reason_is_refused_naming_the_record(network):
    f = one(network)
    bad = dataclasses.replace(f, chargebacks=(dataclasses.replace(f.chargebacks[0],
                                                                  reason_code="99"),))
    with pytest.raises(ClearingError) as e:
        cbk.write(bad, network)
    assert e.value.record == 2


def test_truncated_and_mismatched_files_name_the_record():
    data = cbk.write_base2(one("visa"))
    with pytest.raises(ClearingError) as e:
        cbk.read_base2(data[:-10])
    assert e.value.record is not None
    # the TC92's source amount changed: the trailer no longer matches
    last = len(data) - 168
    tampered = data[:last + 101] + b"9" + data[last + 102:]
    with pytest.raises(ClearingError, match="trailer") as e:
        cbk.read_base2(tampered)
    assert e.value.record == len(data) // 168
    data = cbk.write_ipm(one("mastercard"))
    with pytest.raises(ClearingError):
        cbk.read_ipm(data[:-5])


def test_a_presentment_file_is_not_a_chargeback_file():
    with pytest.raises(ClearingError, match="presentment") as e:
        cbk.read_base2(base2.write(sample_file(n=1)))
    assert e.value.record == 2
    with pytest.raises(ClearingError, match="file type"):
        cbk.read_ipm(ipm.write(sample_file(n=1)))


@given(chargeback_files("mastercard"), st.booleans())
def test_cardutil_reads_our_1442s(f, blocked):
    """cardutil (independent IPM reader, PyPI) sees 1442/450 with DE25 and the original's
    PAN, amount and ARN."""
    import io

    from cardutil import mciipm
    got = list(mciipm.IpmReader(io.BytesIO(cbk.write_ipm(f, blocked=blocked)),
                                encoding="cp500", blocked=blocked))
    assert len(got) == len(f.chargebacks) + 2
    assert got[0]["PDS0105"][:3] == "001"
    for rec, c in zip(got[1:-1], f.chargebacks, strict=True):
        assert (rec["MTI"], rec["DE24"], str(rec["DE25"])) == ("1442", "450", c.reason_code)
        assert rec["DE2"] == c.original.pan and rec["DE4"] == c.original.amount_minor
        assert rec["DE31"] == c.arn


@given(chargeback_files("visa"))
def test_visa_representment_round_trip_usage_code_2(f):
    data = cbk.write_representments(f, "visa")
    assert cbk.read_representments(data, "visa") == f
    tcr0s = [data[i:i + 168] for i in range(0, len(data), 168) if data[i + 3:i + 4] == b"0"
             and data[i:i + 2] in (b"05", b"06", b"07")]
    assert all(r[146:147] == b"2" for r in tcr0s)


def test_a_first_presentment_is_not_a_representment():
    with pytest.raises(ClearingError, match="usage code 2") as e:
        cbk.read_representments(base2.write(one("visa").as_clearing_file()), "visa")
    assert e.value.record == 2


@given(chargeback_files("mastercard"), st.booleans())
def test_mastercard_second_presentment_round_trip_function_205(f, blocked):
    data = cbk.write_representments(f, "mastercard", blocked=blocked)
    assert cbk.read_representments(data, "mastercard", blocked=blocked) == f
