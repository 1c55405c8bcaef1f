"""Visa Base II outgoing file: round trip, byte positions, trailer checks, hostile input."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.clearing import base2
from payswitch.codecs.clearing.errors import ClearingError
from tests.clearing.strategies import clearing_files, sample_file, sample_presentment

PAN = "4761739001010010"


@given(clearing_files(), st.integers(1, 4))
def test_write_then_read_is_identity(f, batch_size):
    data = base2.write(f, batch_size=batch_size)
    assert len(data) % 168 == 0
    assert base2.read(data) == f


def records(data: bytes) -> list[str]:
    return [data[i:i + 168].decode("ascii") for i in range(0, len(data), 168)]


def test_positions_of_a_sale_with_tcr1_and_tcr5():
    f = sample_file(sample_presentment())
    recs = records(base2.write(f))
    assert [r[:4] for r in recs] == ["9000", "0500", "0501", "0505", "9100", "9200"]
    tcr0 = recs[1]
    assert tcr0[4:23] == PAN + "000"  # account number 5-20, extension 21-23
    assert tcr0[26:49] == f.presentments[0].arn  # 27-49
    assert tcr0[57:61] == "1126"  # purchase date MMDD, 58-61
    assert tcr0[76:88] == "000000001234" and tcr0[88:91] == "840"  # source amount/currency
    assert tcr0[91:116] == "CORNER SHOP".ljust(25)
    assert tcr0[129:132] == "US " and tcr0[132:136] == "5411"  # alpha-2 country
    assert tcr0[151:157] == "A1B2C3"
    assert tcr0[163:167] == "6331"  # central processing date YDDD (2026-11-27)
    assert recs[0][4:15] == "412345" + "26331"  # TC90 BIN + YYDDD
    assert recs[3][4:19] == "123456789012345" and recs[3][19:31] == "000000001500"
    assert recs[3][31:36] == "840" + "00"  # authorization currency, response code
    trailer = recs[4]
    assert trailer[30:42] == "1".zfill(12)  # monetary transactions
    assert trailer[48:60] == "4".zfill(12)  # TCRs: 3 + the trailer
    assert trailer[101:116] == "1234".zfill(15)
    assert trailer[74:83] == "2".zfill(9)  # transactions: the TCR0 and the trailer
    assert trailer[60:66] == "0" * 6 and trailer[66:74] == " " * 8  # reserved, batch id
    assert trailer[116:161] == "0" * 45 and trailer[161:] == " " * 7
    assert recs[5][74:83] == "4".zfill(9)  # TC92: TC90, TCR0, TC91, TC92
    assert recs[5][42:48] == "000001"  # TC92: number of batches


def test_pan_lengths_in_account_number_and_extension():
    for pan, field in (("4761739001010", "4761739001010      "),
                       ("4761739001010010123", "4761739001010010123"),
                       ("47617390010100101", "47617390010100101  ")):
        data = base2.write(sample_file(sample_presentment(pan=pan)))
        assert records(data)[1][4:23] == field
        assert base2.read(data).presentments[0].pan == pan
    with pytest.raises(ClearingError, match="19-digit") as e:
        base2.write(sample_file(sample_presentment(pan="4761739001010010000")))
    assert e.value.record == 2 and "4761739001010010000" not in str(e.value)


def test_kinds_have_their_transaction_codes():
    f = sample_file(sample_presentment(kind="credit"), sample_presentment(kind="cash"))
    tcs = [r[:2] for r in records(base2.write(f))]
    assert tcs == ["90", "06", "06", "06", "07", "07", "07", "91", "92"]


def test_optional_records_only_where_the_data_exists():
    p = sample_presentment(terminal_id="", merchant_id="", transaction_id="",
                           auth_amount_minor=None, product_id="")
    recs = records(base2.write(sample_file(p)))
    assert [r[:4] for r in recs] == ["9000", "0500", "9100", "9200"]


def _tamper(data: bytes, record: int, start: int, new: str) -> bytes:
    off = (record - 1) * 168 + start - 1
    return data[:off] + new.encode() + data[off + len(new):]


@pytest.mark.parametrize("record,start,new,field", [
    (5, 102, "000000000001235", "source_amount"),  # TC91 amount
    (5, 31, "000000000002", "monetary_transactions"),  # TC91 count
    (5, 49, "000000000005", "tcr_count"),
    (6, 102, "000000000009999", "source_amount"),  # TC92 amount
])
def test_trailer_that_does_not_match_names_the_trailer(record, start, new, field):
    data = base2.write(sample_file(sample_presentment()))
    with pytest.raises(ClearingError) as e:
        base2.read(_tamper(data, record, start, new))
    assert e.value.record == record and e.value.field == field
    assert f"record {record}" in str(e.value)


def test_changed_amount_is_caught_by_the_trailer():
    data = base2.write(sample_file(n=3))
    # second presentment's TCR0 is record 5 (header, 3 TCRs, then TCR0)
    with pytest.raises(ClearingError) as e:
        base2.read(_tamper(data, 5, 77, "000000009999"))
    assert e.value.record == 11  # the TC91


def test_truncated_file_names_the_short_record():
    data = base2.write(sample_file(n=2))
    with pytest.raises(ClearingError) as e:
        base2.read(data[:-10])
    assert e.value.record == len(data) // 168 and "truncated" in str(e.value)


def test_missing_trailer_and_header():
    data = base2.write(sample_file(n=1))
    with pytest.raises(ClearingError, match="no TC92"):
        base2.read(data[:-168])
    with pytest.raises(ClearingError, match="TC90") as e:
        base2.read(data[168:])
    assert e.value.record == 1


def test_bad_record_is_named_and_no_pan_in_the_error():
    data = base2.write(sample_file(sample_presentment()))
    for start, new in ((77, "00000000X234"), (5, "47617390010100X0"), (133, "54A1"),
                       (1, "55")):
        with pytest.raises(ClearingError) as e:
            base2.read(_tamper(data, 2, start, new))
        assert e.value.record == 2
        assert PAN not in str(e.value) and PAN not in repr(e.value)


def test_non_ascii_record():
    data = bytearray(base2.write(sample_file(n=1)))
    data[168 + 100] = 0xC1
    with pytest.raises(ClearingError, match="ASCII") as e:
        base2.read(bytes(data))
    assert e.value.record == 2


def test_writer_refuses_a_bad_presentment_naming_its_record():
    good, bad = sample_presentment(), sample_presentment(mcc="54X1")
    with pytest.raises(ClearingError) as e:
        base2.write(sample_file(good, bad))
    assert e.value.record == 5 and e.value.field == "mcc"
    with pytest.raises(ClearingError) as e:
        base2.write(sample_file(replace(good, arn=good.arn[:-1] + "0"
                                        if good.arn[-1] != "0" else good.arn[:-1] + "1")))
    assert e.value.field == "arn" and PAN not in str(e.value)


@given(st.binary(max_size=800))
def test_random_bytes_only_clearing_errors(data):
    with pytest.raises(ClearingError):
        base2.read(data)


@given(clearing_files(max_size=3), st.data())
def test_any_single_byte_change_reads_back_or_errors(f, data):
    raw = bytearray(base2.write(f))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0x20, 0x7E))
    with contextlib.suppress(ClearingError):
        base2.read(bytes(raw))


def test_repr_masks_the_pan():
    assert PAN not in repr(sample_presentment())
    assert PAN not in repr(sample_file(sample_presentment()))
