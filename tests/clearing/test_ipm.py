"""Mastercard IPM file: round trip, cardutil cross-check, trailer checks, hostile input."""

from __future__ import annotations

import contextlib
import io
from datetime import datetime

import pytest
from cardutil import mciipm
from cardutil.config import config as cardutil_config
from hypothesis import given
from hypothesis import strategies as st

from payswitch.codecs.clearing import ipm, vbs
from payswitch.codecs.clearing.errors import ClearingError
from payswitch.codecs.clearing.model import ClearingFile
from tests.clearing.strategies import clearing_files, sample_file, sample_presentment

PAN = "4761739001010010"
BITS = cardutil_config["bit_config"]


@given(clearing_files(), st.booleans())
def test_write_then_read_is_identity(f, blocked):
    assert ipm.read(ipm.write(f, blocked=blocked), blocked=blocked) == f


# -- against cardutil ---------------------------------------------------------------

def cardutil_dicts(f: ClearingFile) -> list[dict]:
    """The same messages as cardutil's writer takes them (typed per its config)."""
    out = []
    for fields in ipm_field_dicts(f):
        d: dict = {"MTI": fields["t"]}
        for de, value in fields.items():
            if de == "t":
                continue
            kind = BITS[de].get("field_python_type")
            if de == "48":
                d.update({f"PDS{tag}": v for tag, v in ipm.parse_pds(value, 0).items()})
            elif kind in ("int", "long"):
                d[f"DE{de}"] = int(value)
            elif kind == "datetime":
                d[f"DE{de}"] = datetime.strptime(value, BITS[de]["field_date_format"])
            else:
                d[f"DE{de}"] = value
        out.append(d)
    return out


def ipm_field_dicts(f: ClearingFile) -> list[dict[str, str]]:
    n = len(f.presentments) + 2
    amount = sum(p.amount_minor for p in f.presentments)
    return ([ipm.header_fields(f)]
            + [ipm.presentment_fields(p, i) for i, p in enumerate(f.presentments, start=2)]
            + [ipm.trailer_fields(f, n, amount)])


def cardutil_write(f: ClearingFile, blocked: bool) -> bytes:
    buf = io.BytesIO()
    writer = mciipm.IpmWriter(buf, encoding="cp500", blocked=blocked)
    for d in cardutil_dicts(f):
        writer.write(d)
    writer.close()
    return buf.getvalue()


@given(clearing_files(max_size=5), st.booleans())
def test_same_bytes_as_cardutil_writes(f, blocked):
    assert ipm.write(f, blocked=blocked) == cardutil_write(f, blocked)


@given(clearing_files(max_size=5), st.booleans())
def test_cardutil_reads_what_we_write(f, blocked):
    got = list(mciipm.IpmReader(io.BytesIO(ipm.write(f, blocked=blocked)),
                                encoding="cp500", blocked=blocked))
    assert len(got) == len(f.presentments) + 2
    assert (got[0]["MTI"], got[0]["DE24"]) == ("1644", "697")
    assert (got[-1]["MTI"], got[-1]["DE24"]) == ("1644", "695")
    assert got[-1]["PDS0306"] == f"{len(got):08d}"
    assert got[-1]["PDS0301"] == f"{sum(p.amount_minor for p in f.presentments):016d}"
    for rec, p in zip(got[1:-1], f.presentments, strict=True):
        assert rec["MTI"] == "1240" and rec["DE24"] == "200"
        assert rec["DE2"] == p.pan and rec["DE4"] == p.amount_minor
        assert rec["DE31"] == p.arn and rec["DE49"] == p.currency
        assert rec["DE12"].date() == p.txn_date and rec["DE26"] == int(p.mcc)
        assert rec["PDS0165"] == "M" and rec.get("PDS0002", "") == p.product_id


@given(clearing_files(max_size=5), st.booleans())
def test_we_read_what_cardutil_writes(f, blocked):
    assert ipm.read(cardutil_write(f, blocked), blocked=blocked) == f


def test_blocking_matches_cardutil_at_block_boundaries():
    # Written in small pieces, as a file writer does (RDW, then record): cardutil then
    # adds a block of pure padding when the data ends on a boundary, and so do we.
    for size in (0, 1, 1011, 1012, 1013, 2024, 3000):
        data = bytes(range(256)) * 12
        buf = io.BytesIO()
        b = mciipm.Block1014(buf)
        for i in range(0, size, 4):
            b.write(data[i:min(i + 4, size)])
        b.finalise()
        assert vbs.block(data[:size]) == buf.getvalue()
        unblocked, cut = vbs.unblock(buf.getvalue())
        assert unblocked[:size] == data[:size] and cut is None


# -- hand-checked bytes -------------------------------------------------------------

def test_first_presentment_bytes():
    rec = ipm.write_records(sample_file(sample_presentment()))[1]
    assert rec[:4] == "1240".encode("cp500")
    assert rec[4] & 0x80  # secondary bitmap present (DE71 is in every message)
    body = rec[20:].decode("cp500")
    assert body.startswith("16" + PAN + "000000" + "000000001234" + "261126000000")
    assert "0002003MCC" in body and "0165001M" in body


# -- errors -------------------------------------------------------------------------

def _records(f: ClearingFile) -> list[bytes]:
    return ipm.write_records(f)


def _trailer_with(f: ClearingFile, **pds: str) -> bytes:
    recs = _records(f)
    fields = ipm.trailer_fields(f, len(recs), sum(p.amount_minor for p in f.presentments))
    parsed = ipm.parse_pds(fields["48"], 0)
    parsed.update(pds)
    fields["48"] = ipm.build_pds(parsed)
    recs[-1] = ipm._encode(fields, len(recs))
    return vbs.write_vbs(recs)


@pytest.mark.parametrize("pds,what", [({"0301": "0" * 15 + "1"}, "0301"),
                                      ({"0306": "00000009"}, "0306"),
                                      ({"0105": "0" * 25}, "0105")])
def test_trailer_that_does_not_match_names_the_trailer(pds, what):
    f = sample_file(n=3)
    with pytest.raises(ClearingError) as e:
        ipm.read(_trailer_with(f, **pds))
    assert e.value.record == 5 and what in str(e.value)


def test_truncated_block_and_truncated_record():
    data = ipm.write(sample_file(n=3), blocked=True)
    with pytest.raises(ClearingError, match="block 2 is cut short") as e:
        ipm.read(data[:-1], blocked=True)  # only padding lost: named the last record
    assert e.value.record == 5
    # records of this file: 1 at VBS bytes 0-77, 2 at 78-358, 3 at 359-639, ...
    for cut, record in ((600, 3), (200, 2), (30, 1)):
        with pytest.raises(ClearingError, match="block 1 is cut short") as e:
            ipm.read(data[:cut], blocked=True)
        assert e.value.record == record, cut
    with pytest.raises(ClearingError):
        ipm.read(b"", blocked=True)
    plain = ipm.write(sample_file(n=3))
    with pytest.raises(ClearingError, match="truncated") as e:
        ipm.read(plain[:-30])
    assert e.value.record == 5  # the trailer is cut
    with pytest.raises(ClearingError, match="zero RDW"):
        ipm.read(plain[:-4])


def test_block_without_its_padding_bytes():
    data = bytearray(ipm.write(sample_file(n=3), blocked=True))
    data[1012] = 0x00
    with pytest.raises(ClearingError, match="block 1"):
        ipm.read(bytes(data), blocked=True)


def test_bad_record_is_named_and_no_pan_in_the_error():
    f = sample_file(sample_presentment(), sample_presentment())
    recs = _records(f)
    fields = ipm.presentment_fields(f.presentments[1], 3)
    for de, bad in (("4", "00000000X234"), ("31", "1" * 23), ("3", "990000"),
                    ("71", "00000007"), ("43", "NO SEPARATORS")):
        broken = dict(fields, **{de: bad})
        recs2 = [*recs[:2], ipm._encode(broken, 3), *recs[3:]]
        with pytest.raises(ClearingError) as e:
            ipm.read(vbs.write_vbs(recs2))
        assert e.value.record == 3, de
        assert PAN not in str(e.value)


def test_unknown_message_and_missing_trailer():
    f = sample_file(n=1)
    recs = _records(f)
    with pytest.raises(ClearingError, match="no 1644/695"):
        ipm.read(vbs.write_vbs(recs[:-1]))
    with pytest.raises(ClearingError) as e:
        ipm.read(vbs.write_vbs(recs[1:]))
    assert e.value.record == 1


@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_only_clearing_errors(data, blocked):
    with pytest.raises(ClearingError):
        ipm.read(data, blocked=blocked)


@given(clearing_files(max_size=3), st.data())
def test_any_single_byte_change_reads_back_or_errors(f, data):
    raw = bytearray(ipm.write(f))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ClearingError):
        ipm.read(bytes(raw))
