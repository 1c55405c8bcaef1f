"""Mastercard IPM (Integrated Product Messages) clearing file, as GCMS takes it.

Layouts followed: Mastercard "IPM Clearing Formats" — ISO 8583:1993 messages with an
EBCDIC (cp500) MTI, a binary 128-bit bitmap (DE71 is in every message, so the
secondary bitmap is always there) and EBCDIC fields; private data subelements (PDS)
in DE48 as 4-digit tag, 3-digit length, data, in tag order. pyiso8583 does the bit
work with the IPM field sizes below; cardutil (an independent IPM reader/writer on
PyPI) is the cross-check in the tests and the benchmark.

File::

    1644 function code 697 (file header: PDS 0105 file id, PDS 0122 processing mode)
    1240 function code 200 (first presentment), one per presentment
    1644 function code 695 (file trailer: PDS 0105, PDS 0301 file amount checksum,
                            PDS 0306 message count)

framed as VBS (RDW) records, optionally 1014-byte blocked (``vbs.py``).

First presentment fields: DE2 PAN, DE3 processing code (00 purchase, 20 credit,
12 cash disbursement), DE4 amount, DE12 local date (time 000000: we clear by date),
DE22 POS data code, DE24 200, DE26 MCC, DE30 original (authorized) amount when it
differs, DE31 ARN, DE38 approval code, DE41/DE42 terminal and card acceptor id, DE43
name\\street\\city\\postcode state country, DE48 PDS 0002 (GCMS product id, which with
the MCC prices the transaction), PDS 0158 (business activity: card program,
arrangement, interchange rate designator), PDS 0165 (settlement indicator M), DE49
currency, DE63 transaction lifecycle id, DE71 message number.
"""

from __future__ import annotations

from datetime import date

import iso8583

from payswitch.codecs.clearing import vbs
from payswitch.codecs.clearing.errors import ClearingError
from payswitch.codecs.clearing.model import (
    ClearingFile,
    Kind,
    Presentment,
    check_file,
    check_presentment,
)
from payswitch.codecs.iso8583.dialect import redact

EBCDIC = "cp500"
PROCESSING_CODE: dict[Kind, str] = {"sale": "000000", "credit": "200000", "cash": "120000"}
KIND_BY_CODE: dict[str, Kind] = {v: k for k, v in PROCESSING_CODE.items()}
FILE_TYPE_OUTGOING = "002"  # PDS 0105 subfield 1: file from a customer to GCMS
POS_DATA_CODE = "000000000000"  # DE22: not kept by this model (constant)
BUSINESS_ACTIVITY = "MCC1000000" + "00"  # PDS 0158: program, BSA type, BSA id, IRD
SETTLEMENT_INDICATOR = "M"  # PDS 0165: settled by Mastercard

# (len_type 0 fixed / 2 LLVAR / 3 LLLVAR, max_len, binary?) per IPM data element
_IPM_FIELDS: dict[str, tuple[int, int, bool]] = {
    "2": (2, 19, False), "3": (0, 6, False), "4": (0, 12, False), "5": (0, 12, False),
    "6": (0, 12, False), "9": (0, 8, False), "10": (0, 8, False), "12": (0, 12, False),
    "14": (0, 4, False), "22": (0, 12, False), "23": (0, 3, False), "24": (0, 3, False),
    "25": (0, 4, False), "26": (0, 4, False), "30": (0, 24, False), "31": (2, 23, False),
    "32": (2, 11, False), "33": (2, 11, False), "37": (0, 12, False), "38": (0, 6, False),
    "40": (0, 3, False), "41": (0, 8, False), "42": (0, 15, False), "43": (2, 99, False),
    "48": (3, 999, False), "49": (0, 3, False), "50": (0, 3, False), "51": (0, 3, False),
    "54": (3, 120, False), "55": (3, 255, True), "62": (3, 999, False),
    "63": (3, 16, False), "71": (0, 8, False), "72": (3, 999, False), "73": (0, 6, False),
    "93": (2, 11, False), "94": (2, 11, False), "95": (2, 10, False),
    "100": (2, 11, False), "105": (3, 999, False), "111": (3, 999, False),
    "123": (3, 999, False), "124": (3, 999, False), "125": (3, 999, False),
    "127": (3, 999, False),
}


def _spec() -> dict[str, dict]:
    spec: dict[str, dict] = {
        "h": {"data_enc": EBCDIC, "len_enc": EBCDIC, "len_type": 0, "max_len": 0,
              "desc": "no header"},
        "t": {"data_enc": EBCDIC, "len_enc": EBCDIC, "len_type": 0, "max_len": 4,
              "desc": "MTI"},
        "p": {"data_enc": "b", "len_enc": EBCDIC, "len_type": 0, "max_len": 8,
              "desc": "Bitmap, primary"},
        "1": {"data_enc": "b", "len_enc": EBCDIC, "len_type": 0, "max_len": 8,
              "desc": "Bitmap, secondary"},
    }
    for de in range(2, 129):
        len_type, max_len, binary = _IPM_FIELDS.get(str(de), (3, 999, False))
        spec[str(de)] = {"data_enc": "b" if binary else EBCDIC, "len_enc": EBCDIC,
                         "len_type": len_type, "max_len": max_len, "desc": f"DE{de}"}
    return spec


SPEC = _spec()


# -- PDS ------------------------------------------------------------------------------

def build_pds(pds: dict[str, str]) -> str:
    """``{"0165": "M"}`` -> ``"0165001M"``; in tag order, as GCMS and cardutil write."""
    return "".join(f"{tag}{len(value):03d}{value}" for tag, value in sorted(pds.items()))


def parse_pds(text: str, record: int) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        head = text[i:i + 7]
        if len(head) < 7 or not (head.isascii() and head.isdigit()):
            raise ClearingError(f"DE48 PDS at offset {i} has no 4-digit tag and 3-digit length",
                                record=record, field="48")
        tag, length = head[:4], int(head[4:])
        value = text[i + 7:i + 7 + length]
        if len(value) != length:
            raise ClearingError(f"DE48 PDS {tag} is truncated", record=record, field="48")
        if tag in out:
            raise ClearingError(f"DE48 PDS {tag} appears twice", record=record, field="48")
        out[tag] = value
        i += 7 + length
    return out


# -- messages -------------------------------------------------------------------------

def _file_id(f: ClearingFile) -> str:
    return (f"{FILE_TYPE_OUTGOING}{f.file_date:%y%m%d}{f.sender_id.zfill(11)}"
            f"{f.file_seq:05d}")


def _encode(fields: dict[str, str], record: int) -> bytes:
    try:
        raw, _ = iso8583.encode(fields, SPEC)
    except iso8583.EncodeError as e:
        raise ClearingError(redact(e.msg), record=record, field=e.field) from None
    return bytes(raw)


def header_fields(f: ClearingFile) -> dict[str, str]:
    return {"t": "1644", "24": "697",
            "48": build_pds({"0105": _file_id(f), "0122": "T" if f.test else "P"}),
            "71": "00000001"}


def presentment_fields(p: Presentment, number: int) -> dict[str, str]:
    de43 = (f"{p.merchant_name}\\\\{p.merchant_city}\\" + " " * 13 + p.merchant_country)
    pds = {"0158": BUSINESS_ACTIVITY, "0165": SETTLEMENT_INDICATOR}
    if p.product_id:
        pds["0002"] = p.product_id
    fields = {"t": "1240", "2": p.pan, "3": PROCESSING_CODE[p.kind],
              "4": f"{p.amount_minor:012d}", "12": f"{p.txn_date:%y%m%d}000000",
              "22": POS_DATA_CODE, "24": "200", "26": p.mcc, "31": p.arn,
              "38": p.auth_code, "43": de43, "48": build_pds(pds), "49": p.currency,
              "71": f"{number:08d}"}
    if p.auth_amount_minor is not None:
        fields["30"] = f"{p.auth_amount_minor:012d}" + "0" * 12
    if p.terminal_id:
        fields["41"] = p.terminal_id.ljust(8)
    if p.merchant_id:
        fields["42"] = p.merchant_id.ljust(15)
    if p.transaction_id:
        fields["63"] = p.transaction_id
    return fields


def trailer_fields(f: ClearingFile, number: int, amount: int) -> dict[str, str]:
    return {"t": "1644", "24": "695",
            "48": build_pds({"0105": _file_id(f), "0301": f"{amount:016d}",
                             "0306": f"{number:08d}"}),
            "71": f"{number:08d}"}


def write_records(f: ClearingFile) -> list[bytes]:
    """Each IPM message as bytes (no RDW)."""
    check_file(f)
    out = [_encode(header_fields(f), 1)]
    for p in f.presentments:
        number = len(out) + 1
        check_presentment(p, record=number)
        out.append(_encode(presentment_fields(p, number), number))
    amount = sum(p.amount_minor for p in f.presentments)
    out.append(_encode(trailer_fields(f, len(out) + 1, amount), len(out) + 1))
    return out


def write(f: ClearingFile, *, blocked: bool = False) -> bytes:
    data = vbs.write_vbs(write_records(f))
    return vbs.block(data) if blocked else data


# -- reader ---------------------------------------------------------------------------

def decode_record(raw: bytes, record: int) -> dict[str, str]:
    try:
        fields, _ = iso8583.decode(raw, SPEC)
    except iso8583.DecodeError as e:
        raise ClearingError(redact(e.msg), record=record, field=e.field) from None
    except Exception as e:  # pyiso8583 can raise others on hostile input
        raise ClearingError(f"undecodable message: {type(e).__name__}", record=record) from None
    if fields.get("71") != f"{record:08d}":
        raise ClearingError("DE71 message number is not the record's number", record=record,
                            field="71")
    return fields


def _need(fields: dict[str, str], de: str, record: int) -> str:
    if de not in fields:
        raise ClearingError(f"DE{de} is missing", record=record, field=de)
    return fields[de]


def _digits(value: str, record: int, de: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise ClearingError(f"DE{de} is not digits", record=record, field=de)
    return int(value)


def _presentment(fields: dict[str, str], record: int) -> Presentment:
    code = _need(fields, "3", record)
    if code not in KIND_BY_CODE:
        raise ClearingError("DE3 is not a purchase, credit or cash code", record=record,
                            field="3")
    de12 = _need(fields, "12", record)
    try:
        txn_date = date(2000 + int(de12[:2]), int(de12[2:4]), int(de12[4:6]))
    except ValueError:
        raise ClearingError("DE12 is not YYMMDDhhmmss", record=record, field="12") from None
    parts = _need(fields, "43", record).split("\\")
    if len(parts) != 4 or len(parts[3]) != 16:
        raise ClearingError("DE43 is not name\\street\\city\\postcode state country",
                            record=record, field="43")
    pds = parse_pds(_need(fields, "48", record), record)
    de30 = fields.get("30")
    p = Presentment(
        kind=KIND_BY_CODE[code], pan=_need(fields, "2", record),
        amount_minor=_digits(_need(fields, "4", record), record, "4"),
        currency=_need(fields, "49", record), txn_date=txn_date,
        arn=_need(fields, "31", record), auth_code=_need(fields, "38", record),
        mcc=_need(fields, "26", record), merchant_name=parts[0],
        merchant_city=parts[2], merchant_country=parts[3][13:],
        terminal_id=fields.get("41", "").rstrip(" "),
        merchant_id=fields.get("42", "").rstrip(" "),
        transaction_id=fields.get("63", ""),
        auth_amount_minor=None if de30 is None else _digits(de30[:12], record, "30"),
        product_id=pds.get("0002", ""))
    check_presentment(p, record=record)
    return p


def _file_header(fields: dict[str, str]) -> ClearingFile:
    if fields.get("t") != "1644" or fields.get("24") != "697":
        raise ClearingError("first record is not a 1644/697 file header", record=1)
    pds = parse_pds(_need(fields, "48", 1), 1)
    fid, mode = pds.get("0105", ""), pds.get("0122", "")
    if len(fid) != 25 or not fid.isdigit() or fid[:3] != FILE_TYPE_OUTGOING \
            or fid[9:14] != "00000" or mode not in ("T", "P"):
        raise ClearingError("PDS 0105 file id or PDS 0122 mode is not as expected",
                            record=1, field="48")
    try:
        file_date = date(2000 + int(fid[3:5]), int(fid[5:7]), int(fid[7:9]))
    except ValueError:
        raise ClearingError("PDS 0105 file date is not YYMMDD", record=1, field="48") from None
    f = ClearingFile(sender_id=fid[14:20], file_date=file_date, file_seq=int(fid[20:]),
                     test=mode == "T")
    check_file(f)
    return f


def _check_trailer(fields: dict[str, str], head: ClearingFile, record: int,
                   amount: int) -> None:
    pds = parse_pds(_need(fields, "48", record), record)
    if pds.get("0105") != _file_id(head):
        raise ClearingError("trailer PDS 0105 file id differs from the header",
                            record=record, field="48")
    if pds.get("0306") != f"{record:08d}":
        raise ClearingError("trailer PDS 0306 message count does not match the records",
                            record=record, field="48")
    if pds.get("0301") != f"{amount:016d}":
        raise ClearingError("trailer PDS 0301 amount checksum does not match the records",
                            record=record, field="48")


def read(data: bytes, *, blocked: bool = False) -> ClearingFile:
    records = vbs.read_vbs(data, blocked=blocked)
    if not records:
        raise ClearingError("empty file: no 1644/697 header")
    head = _file_header(decode_record(records[0], 1))
    presentments: list[Presentment] = []
    for number, raw in enumerate(records[1:], start=2):
        fields = decode_record(raw, number)
        mti, function = fields.get("t"), fields.get("24")
        if mti == "1240" and function == "200":
            presentments.append(_presentment(fields, number))
        elif mti == "1644" and function == "695":
            if number != len(records):
                raise ClearingError("records after the 1644/695 trailer", record=number + 1)
            _check_trailer(fields, head, number, sum(p.amount_minor for p in presentments))
            return ClearingFile(sender_id=head.sender_id, file_date=head.file_date,
                                file_seq=head.file_seq, presentments=tuple(presentments),
                                test=head.test)
        else:
            raise ClearingError("not a 1240/200 presentment or a 1644/695 trailer",
                                record=number, field="24")
    raise ClearingError("no 1644/695 file trailer", record=len(records))
