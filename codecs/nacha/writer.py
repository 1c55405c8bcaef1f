"""Write a NachaFile: controls computed, blocked by 10 with 9-filled padding.

``write`` reads its own output back by default, so it never hands out a file the
reader (or an ODFI applying the same rules) would refuse.
"""

from __future__ import annotations

import dataclasses
import math

from payswitch.codecs.nacha.model import (
    Batch,
    Entry,
    NachaFile,
    NocAddenda,
    PaymentAddenda,
    ReturnAddenda,
)
from payswitch.codecs.nacha.reader import STRICT, Relaxations, entry_count, entry_hash, read, totals
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
    write_record,
)


def _fields(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _addenda(a, entry: Entry) -> str:
    if isinstance(a, PaymentAddenda):
        return write_record({"payment_info": a.payment_info, "sequence": 1,
                             "entry_sequence": entry.trace_number[8:]}, ADDENDA_05, "addenda 05")
    if isinstance(a, ReturnAddenda):
        return write_record(_fields(a), ADDENDA_99, "addenda 99")
    if isinstance(a, NocAddenda):
        return write_record(_fields(a), ADDENDA_98, "addenda 98")
    raise TypeError(f"not an addenda: {type(a).__name__}")


def _batch(b: Batch) -> list[str]:
    out = [write_record(_fields(b), BATCH_HEADER, "batch header")]
    for e in b.entries:
        values = _fields(e)
        values["addenda_indicator"] = 1 if e.addenda else 0
        out.append(write_record(values, ENTRY, "entry detail"))
        out.extend(_addenda(a, e) for a in e.addenda)
    debit, credit = totals(b.entries)
    out.append(write_record({
        "service_class": b.service_class, "entry_count": entry_count(b.entries),
        "entry_hash": entry_hash(b.entries), "total_debit": debit, "total_credit": credit,
        "company_id": b.company_id, "message_auth_code": b.message_auth_code,
        "odfi": b.odfi, "batch_number": b.batch_number}, BATCH_CONTROL, "batch control"))
    return out


def write_lines(f: NachaFile) -> list[str]:
    """The records, padding included, without checking them."""
    lines = [write_record(_fields(f), FILE_HEADER, "file header")]
    for b in f.batches:
        lines.extend(_batch(b))
    entries = f.entries()
    blocks = math.ceil((len(lines) + 1) / BLOCKING_FACTOR)
    debit, credit = totals(entries)
    lines.append(write_record({
        "batch_count": len(f.batches), "block_count": blocks,
        "entry_count": entry_count(entries), "entry_hash": entry_hash(entries),
        "total_debit": debit, "total_credit": credit}, FILE_CONTROL, "file control"))
    lines.extend([PADDING] * (blocks * BLOCKING_FACTOR - len(lines)))
    return lines


def write(f: NachaFile, *, check: bool = True, relax: Relaxations = STRICT) -> str:
    """The file as text, one record per line (``\\n``); checked by reading it back."""
    text = "\n".join(write_lines(f)) + "\n"
    if check:
        read(text, relax)
    return text
