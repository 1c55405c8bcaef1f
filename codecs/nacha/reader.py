"""Read and check a NACHA file: every error names the line, record type and field.

The reader walks the records once with a small state machine (header, batches of
entries with their addenda, control, padding) and checks the rules an ODFI or
the ACH operator would reject a file for. ``Relaxations`` switches off the few
checks real-world files are known to break; all are off by default.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from payswitch.codecs.nacha import codes
from payswitch.codecs.nacha.errors import NachaError
from payswitch.codecs.nacha.model import (
    Addenda,
    Batch,
    Entry,
    NachaFile,
    NocAddenda,
    PaymentAddenda,
    ReturnAddenda,
)
from payswitch.codecs.nacha.records import (
    ADDENDA_05,
    ADDENDA_98,
    ADDENDA_99,
    BATCH_CONTROL,
    BATCH_HEADER,
    BLOCKING_FACTOR,
    ENTRY,
    FILE_CONTROL,
    FILE_HEADER,
    PADDING,
    RECORD_LEN,
    read_record,
)
from payswitch.codecs.nacha.routing import is_valid_routing

DEFAULT_MAX_RECORDS = 1_000_000  # about 94 MB: larger than any file we send or take
_FILE_ID = re.compile(r"[A-Z0-9]")


@dataclass(frozen=True)
class Relaxations:
    """Checks that real-world files break; each one off (strict) by default."""

    origin_destination: bool = False  # immediate origin/destination not routing numbers
    custom_trace_numbers: bool = False  # trace not ODFI-prefixed, ascending, or echoed
    noc_checks: bool = False  # unknown change codes, empty corrected data, amounts on COR


STRICT = Relaxations()


def entry_hash(entries) -> int:
    """Sum of the 8-digit RDFI ids, the low ten digits kept."""
    return sum(int(e.routing[:8]) for e in entries) % 10**10


def totals(entries) -> tuple[int, int]:
    """(total debit, total credit) in minor units."""
    debit = sum(e.amount for e in entries if codes.is_debit(e.transaction_code))
    credit = sum(e.amount for e in entries if not codes.is_debit(e.transaction_code))
    return debit, credit


def entry_count(entries) -> int:
    return sum(1 + len(e.addenda) for e in entries)


def split_records(data: bytes | str, max_records: int = DEFAULT_MAX_RECORDS) -> list[str]:
    """Lines of the file; a file without line breaks is cut into 94-char records."""
    if isinstance(data, bytes | bytearray):
        if len(data) > max_records * (RECORD_LEN + 2):
            raise NachaError(f"file larger than {max_records} records")
        raw = bytes(data)
        try:
            data = raw.decode("ascii")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise NachaError("not ASCII", line=line) from None
    if len(data) > max_records * (RECORD_LEN + 2):
        raise NachaError(f"file larger than {max_records} records")
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if len(lines) == 1 and len(lines[0]) > RECORD_LEN and len(lines[0]) % RECORD_LEN == 0:
        one = lines[0]
        lines = [one[i:i + RECORD_LEN] for i in range(0, len(one), RECORD_LEN)]
    if not lines:
        raise NachaError("empty file")
    return lines


class _Reader:
    def __init__(self, lines: list[str], relax: Relaxations) -> None:
        self.lines = lines
        self.relax = relax
        self.pos = 0  # index of the next line

    # -- helpers -------------------------------------------------------------
    def err(self, reason: str, field: str | None = None, lineno: int | None = None) -> NachaError:
        lineno = lineno or self.pos
        rtype = self.lines[lineno - 1][:1] if 0 < lineno <= len(self.lines) else None
        return NachaError(reason, line=lineno, record_type=rtype, field=field)

    def peek(self) -> str:
        return self.lines[self.pos][:1] if self.pos < len(self.lines) else ""

    def take(self, layout) -> dict:
        if self.pos >= len(self.lines):
            raise NachaError("file ends early: no file control record", line=self.pos)
        line = self.lines[self.pos]
        self.pos += 1
        if len(line) != RECORD_LEN:
            raise self.err(f"record is {len(line)} characters, not {RECORD_LEN}")
        if not line.isprintable():
            raise self.err("control character in record")
        return read_record(line, layout, self.pos)

    def expect(self, rtype: str, what: str) -> None:
        if self.peek() != rtype:
            self.pos += 1
            raise self.err(f"expected {what} (record type {rtype})", "record_type")

    # -- records -------------------------------------------------------------
    def read(self) -> NachaFile:
        self.expect("1", "file header")
        h = self.take(FILE_HEADER)
        self.check_file_header(h)
        batches: list[Batch] = []
        while self.peek() == "5":
            batches.append(self.batch(batches[-1].batch_number if batches else 0))
        self.expect("9", "batch header or file control")
        c = self.take(FILE_CONTROL)
        f = NachaFile(
            immediate_destination=h["immediate_destination"],
            immediate_origin=h["immediate_origin"], creation_date=h["creation_date"],
            file_id_modifier=h["file_id_modifier"], creation_time=h["creation_time"],
            destination_name=h["destination_name"], origin_name=h["origin_name"],
            reference_code=h["reference_code"], priority_code=h["priority_code"],
            batches=tuple(batches))
        self.check_file_control(f, c)
        self.padding()
        return f

    def check_file_header(self, h: dict) -> None:
        if not self.relax.origin_destination:
            if not is_valid_routing(h["immediate_destination"]):
                raise self.err("not a routing number with a valid check digit",
                               "immediate_destination")
            origin = h["immediate_origin"]
            if not (is_valid_routing(origin) or (len(origin) == 10 and origin.isdigit())):
                raise self.err("neither a routing number nor a 10-digit company id",
                               "immediate_origin")
        if not _FILE_ID.fullmatch(h["file_id_modifier"]):
            raise self.err("must be A-Z or 0-9", "file_id_modifier")
        t = h["creation_time"]
        if t and not (len(t) == 4 and t.isdigit() and int(t[:2]) < 24 and int(t[2:]) < 60):
            raise self.err("not a time HHMM", "creation_time")

    def batch(self, previous_number: int) -> Batch:
        h = self.take(BATCH_HEADER)
        header_line = self.pos
        if h["service_class"] not in codes.SERVICE_CLASSES:
            raise self.err("unknown service class code", "service_class")
        if h["sec_code"] not in codes.SEC_CODES:
            raise self.err("SEC code not supported (PPD, CCD, WEB, COR)", "sec_code")
        if h["originator_status"] not in ("0", "1", "2"):
            raise self.err("must be 0, 1 or 2", "originator_status")
        if h["batch_number"] <= previous_number:
            raise self.err("batch numbers must ascend", "batch_number")
        entries: list[Entry] = []
        while self.peek() == "6":
            entries.append(self.entry(h, entries[-1] if entries else None))
        if self.peek() == "7":
            self.pos += 1
            raise self.err("addenda without an entry that announces it", "addenda_indicator")
        self.expect("8", "entry detail or batch control")
        c = self.take(BATCH_CONTROL)
        b = Batch(**{k: v for k, v in h.items()}, entries=tuple(entries),
                  message_auth_code=c["message_auth_code"])
        self.check_batch_control(b, c, header_line)
        return b

    def entry(self, bh: dict, previous: Entry | None) -> Entry:
        d = self.take(ENTRY)
        code, sec = d["transaction_code"], bh["sec_code"]
        if code not in codes.TRANSACTION_CODES:
            raise self.err("unknown transaction code", "transaction_code")
        if bh["service_class"] == 220 and codes.is_debit(code):
            raise self.err("debit in a credits-only batch (220)", "transaction_code")
        if bh["service_class"] == 225 and not codes.is_debit(code):
            raise self.err("credit in a debits-only batch (225)", "transaction_code")
        if not is_valid_routing(d["routing"]):
            raise self.err("routing check digit does not match", "routing")
        if code in codes.ZERO_AMOUNT_CODES and d["amount"]:
            raise self.err("prenote or zero-dollar entry with an amount", "amount")
        if d["addenda_indicator"] not in (0, 1):
            raise self.err("must be 0 or 1", "addenda_indicator")
        if sec == "WEB" and code not in codes.RETURN_OR_NOC_CODES \
                and d["discretionary_data"] not in ("R", "S"):
            raise self.err("WEB payment type code must be R or S", "discretionary_data")
        trace = d["trace_number"]
        if not self.relax.custom_trace_numbers:
            if code not in codes.RETURN_OR_NOC_CODES and trace[:8] != bh["odfi"]:
                raise self.err("trace number does not start with the ODFI id", "trace_number")
            if previous is not None and trace <= previous.trace_number:
                raise self.err("trace numbers must ascend within a batch", "trace_number")
        if sec == "COR" and code not in codes.RETURN_OR_NOC_CODES:
            raise self.err("a COR entry needs an automated return/NOC code", "transaction_code")
        if sec == "COR" and d["amount"] and not self.relax.noc_checks:
            raise self.err("a notification of change carries no amount", "amount")
        addenda = self.addenda(d, sec) if d["addenda_indicator"] else ()
        if not addenda and (sec == "COR" or code in codes.RETURN_OR_NOC_CODES):
            raise self.err("a return or NOC entry needs its addenda (99 or 98)",
                           "addenda_indicator")
        del d["addenda_indicator"]
        return Entry(**d, addenda=addenda)

    def addenda(self, entry: dict, sec: str) -> tuple:
        entry_line = self.pos
        if self.peek() != "7":
            raise self.err("addenda indicator is 1 but no addenda follows",
                           "addenda_indicator", entry_line)
        kind = self.lines[self.pos][1:3]
        code = entry["transaction_code"]
        if sec == "COR":
            if kind != "98":
                self.pos += 1
                raise self.err("a COR entry takes addenda type 98", "addenda_type")
            out: tuple[Addenda, ...] = (self.noc(entry),)
        elif code in codes.RETURN_OR_NOC_CODES:
            if kind != "99":
                self.pos += 1
                raise self.err("a return entry takes addenda type 99", "addenda_type")
            out = (self.return_addenda(entry),)
        else:
            if kind != "05":
                self.pos += 1
                raise self.err(f"{sec} entries take addenda type 05", "addenda_type")
            a = self.take(ADDENDA_05)
            if a["sequence"] != 1:
                raise self.err("addenda sequence must be 0001", "sequence")
            if a["entry_sequence"] != entry["trace_number"][8:]:
                raise self.err("does not match the entry's trace sequence", "entry_sequence")
            out = (PaymentAddenda(a["payment_info"]),)
        if self.peek() == "7":
            self.pos += 1
            raise self.err(f"only one addenda allowed for {sec}", "addenda_type")
        return out

    def return_addenda(self, entry: dict) -> ReturnAddenda:
        a = self.take(ADDENDA_99)
        if not re.fullmatch(r"R\d\d", a["reason_code"]):
            raise self.err("return reason code must be Rnn", "reason_code")
        dod = a["date_of_death"]
        if dod and not (len(dod) == 6 and dod.isdigit()):
            raise self.err("date of death must be YYMMDD or blank", "date_of_death")
        self.check_echoed_trace(a, entry)
        return ReturnAddenda(**a)

    def noc(self, entry: dict) -> NocAddenda:
        a = self.take(ADDENDA_98)
        if not self.relax.noc_checks:
            if a["change_code"] not in codes.CHANGE_CODES:
                raise self.err("unknown change code", "change_code")
            if not a["corrected_data"]:
                raise self.err("corrected data is empty", "corrected_data")
        self.check_echoed_trace(a, entry)
        return NocAddenda(**a)

    def check_echoed_trace(self, a: dict, entry: dict) -> None:
        if not self.relax.custom_trace_numbers and a["trace_number"] != entry["trace_number"]:
            raise self.err("must equal the entry's trace number", "trace_number")

    def check_batch_control(self, b: Batch, c: dict, header_line: int) -> None:
        expect = {
            "service_class": b.service_class, "entry_count": entry_count(b.entries),
            "entry_hash": entry_hash(b.entries), "company_id": b.company_id,
            "odfi": b.odfi, "batch_number": b.batch_number,
        }
        expect["total_debit"], expect["total_credit"] = totals(b.entries)
        for name, want in expect.items():
            if c[name] != want:
                raise self.err(f"does not match the batch (header on line {header_line})",
                               name)

    def check_file_control(self, f: NachaFile, c: dict) -> None:
        entries = f.entries()
        expect = {
            "batch_count": len(f.batches), "entry_count": entry_count(entries),
            "entry_hash": entry_hash(entries),
            "block_count": math.ceil(len(self.lines) / BLOCKING_FACTOR),
        }
        expect["total_debit"], expect["total_credit"] = totals(entries)
        for name, want in expect.items():
            if c[name] != want:
                raise self.err("does not match the file's batches", name)

    def padding(self) -> None:
        while self.pos < len(self.lines):
            self.pos += 1
            if self.lines[self.pos - 1] != PADDING:
                raise self.err("after the file control only 9-filled padding may follow",
                               "padding")
        if len(self.lines) % BLOCKING_FACTOR:
            raise self.err(f"{len(self.lines)} records, not a multiple of the blocking "
                           f"factor {BLOCKING_FACTOR}", "block_count")


def read(data: bytes | str, relax: Relaxations = STRICT, *,
         max_records: int = DEFAULT_MAX_RECORDS) -> NachaFile:
    """Parse and check a whole file; raises NachaError (line, record type, field)."""
    lines = split_records(data, max_records)
    if len(lines) > max_records:
        raise NachaError(f"more than {max_records} records")
    return _Reader(lines, relax).read()
