"""The six record layouts as data, and one reader and one writer of a 94-char record.

Each layout is a tuple of fields (name, first column 1-based, width, kind):

- ``const``: fixed text (the value is in ``const``), checked on read;
- ``num``: right-justified digits, zero-filled, read as ``int``;
- ``digits``: a string of exactly ``width`` digits (routing ids, trace numbers);
- ``text``: left-justified printable ASCII, space-filled, read right-stripped;
- ``rtext``: right-justified, space-filled, read left-stripped (immediate origin);
- ``date``: YYMMDD read as ``datetime.date``;
- ``blank``: reserved spaces, checked on read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from payswitch.codecs.nacha.errors import NachaError

RECORD_LEN = 94
BLOCKING_FACTOR = 10
PADDING = "9" * RECORD_LEN


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    start: int  # 1-based column, as the NACHA rules print it
    width: int
    kind: str
    const: str = ""


def _layout(*fields: Field) -> tuple[Field, ...]:
    col = 1
    for f in fields:  # programmer check: the table tiles 94 columns exactly
        assert f.start == col, (f.name, f.start, col)
        col += f.width
    assert col == RECORD_LEN + 1, col
    return fields


F = Field
FILE_HEADER = _layout(
    F("record_type", 1, 1, "const", "1"), F("priority_code", 2, 2, "num"),
    F("immediate_destination", 4, 10, "rtext"), F("immediate_origin", 14, 10, "rtext"),
    F("creation_date", 24, 6, "date"), F("creation_time", 30, 4, "text"),
    F("file_id_modifier", 34, 1, "text"), F("record_size", 35, 3, "const", "094"),
    F("blocking_factor", 38, 2, "const", "10"), F("format_code", 40, 1, "const", "1"),
    F("destination_name", 41, 23, "text"), F("origin_name", 64, 23, "text"),
    F("reference_code", 87, 8, "text"))
BATCH_HEADER = _layout(
    F("record_type", 1, 1, "const", "5"), F("service_class", 2, 3, "num"),
    F("company_name", 5, 16, "text"), F("discretionary_data", 21, 20, "text"),
    F("company_id", 41, 10, "text"), F("sec_code", 51, 3, "text"),
    F("entry_description", 54, 10, "text"), F("descriptive_date", 64, 6, "text"),
    F("effective_date", 70, 6, "date"), F("settlement_date", 76, 3, "text"),
    F("originator_status", 79, 1, "text"), F("odfi", 80, 8, "digits"),
    F("batch_number", 88, 7, "num"))
ENTRY = _layout(
    F("record_type", 1, 1, "const", "6"), F("transaction_code", 2, 2, "num"),
    F("routing", 4, 9, "digits"), F("account", 13, 17, "text"),
    F("amount", 30, 10, "num"), F("individual_id", 40, 15, "text"),
    F("individual_name", 55, 22, "text"), F("discretionary_data", 77, 2, "text"),
    F("addenda_indicator", 79, 1, "num"), F("trace_number", 80, 15, "digits"))
ADDENDA_05 = _layout(
    F("record_type", 1, 1, "const", "7"), F("addenda_type", 2, 2, "const", "05"),
    F("payment_info", 4, 80, "text"), F("sequence", 84, 4, "num"),
    F("entry_sequence", 88, 7, "digits"))
ADDENDA_99 = _layout(
    F("record_type", 1, 1, "const", "7"), F("addenda_type", 2, 2, "const", "99"),
    F("reason_code", 4, 3, "text"), F("original_trace", 7, 15, "digits"),
    F("date_of_death", 22, 6, "text"), F("original_rdfi", 28, 8, "digits"),
    F("addenda_info", 36, 44, "text"), F("trace_number", 80, 15, "digits"))
ADDENDA_98 = _layout(
    F("record_type", 1, 1, "const", "7"), F("addenda_type", 2, 2, "const", "98"),
    F("change_code", 4, 3, "text"), F("original_trace", 7, 15, "digits"),
    F("reserved1", 22, 6, "blank"), F("original_rdfi", 28, 8, "digits"),
    F("corrected_data", 36, 29, "text"), F("reserved2", 65, 15, "blank"),
    F("trace_number", 80, 15, "digits"))
BATCH_CONTROL = _layout(
    F("record_type", 1, 1, "const", "8"), F("service_class", 2, 3, "num"),
    F("entry_count", 5, 6, "num"), F("entry_hash", 11, 10, "num"),
    F("total_debit", 21, 12, "num"), F("total_credit", 33, 12, "num"),
    F("company_id", 45, 10, "text"), F("message_auth_code", 55, 19, "text"),
    F("reserved", 74, 6, "blank"), F("odfi", 80, 8, "digits"),
    F("batch_number", 88, 7, "num"))
FILE_CONTROL = _layout(
    F("record_type", 1, 1, "const", "9"), F("batch_count", 2, 6, "num"),
    F("block_count", 8, 6, "num"), F("entry_count", 14, 8, "num"),
    F("entry_hash", 22, 10, "num"), F("total_debit", 32, 12, "num"),
    F("total_credit", 44, 12, "num"), F("reserved", 56, 39, "blank"))


def _printable(s: str) -> bool:
    return s.isascii() and s.isprintable()


def read_record(line: str, layout: tuple[Field, ...], lineno: int) -> dict:
    """The fields of one record as a dict; a NachaError naming line, type and field."""
    out: dict = {}
    for f in layout:
        raw = line[f.start - 1:f.start - 1 + f.width]
        kind = f.kind
        if kind == "text":
            out[f.name] = raw.rstrip(" ")
        elif kind == "num" or kind == "digits" or kind == "date":
            if not (raw.isascii() and raw.isdigit()):
                raise _bad(line, lineno, f, "must be digits")
            if kind == "num":
                out[f.name] = int(raw)
            elif kind == "digits":
                out[f.name] = raw
            else:
                try:  # the century is implied: NACHA files are dated 2000-2099
                    out[f.name] = dt.date(2000 + int(raw[:2]), int(raw[2:4]), int(raw[4:]))
                except ValueError:
                    raise _bad(line, lineno, f, "not a date YYMMDD") from None
        elif kind == "const":
            if raw != f.const:
                raise _bad(line, lineno, f, f"must be {f.const!r}")
        elif kind == "blank":
            if raw.strip():
                raise _bad(line, lineno, f, "reserved, must be blank")
        else:  # rtext
            out[f.name] = raw.lstrip(" ")
    return out


def _bad(line: str, lineno: int, f: Field, reason: str) -> NachaError:
    return NachaError(reason, line=lineno, record_type=line[:1], field=f.name)


def write_record(values: dict, layout: tuple[Field, ...], what: str) -> str:
    """One 94-char record from ``values``; a NachaError naming the field that does not fit."""
    parts = []
    for f in layout:
        if f.kind == "const":
            parts.append(f.const)
            continue
        if f.kind == "blank":
            parts.append(" " * f.width)
            continue
        v = values[f.name]

        def bad(reason: str, f: Field = f) -> NachaError:
            return NachaError(f"{what}: {reason}", field=f.name)

        if f.kind == "num":
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad("must be a non-negative int")
            s = str(v)
            if len(s) > f.width:
                raise bad(f"more than {f.width} digits")
            parts.append(s.zfill(f.width))
        elif f.kind == "digits":
            if not (isinstance(v, str) and len(v) == f.width and v.isascii() and v.isdigit()):
                raise bad(f"must be {f.width} digits")
            parts.append(v)
        elif f.kind == "date":
            if not isinstance(v, dt.date) or not 2000 <= v.year <= 2099:
                raise bad("must be a date in 2000-2099")  # YYMMDD: the century is implied
            parts.append(v.strftime("%y%m%d"))
        else:
            if not (isinstance(v, str) and _printable(v)):
                raise bad("must be printable ASCII text")
            if len(v) > f.width:
                raise bad(f"longer than {f.width} characters")
            parts.append(v.ljust(f.width) if f.kind == "text" else v.rjust(f.width))
    return "".join(parts)
