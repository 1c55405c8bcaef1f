"""The file as the reader returns it and the writer takes it.

Controls (entry counts, hashes, totals, block count), addenda indicators and
sequence numbers are not in the model: the writer computes them and the reader
checks them, so a model cannot disagree with itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaymentAddenda:
    """Addenda type 05 (PPD, CCD, WEB): free payment-related information."""

    payment_info: str


@dataclass(frozen=True)
class ReturnAddenda:
    """Addenda type 99 on a return entry: why, and which entry came back."""

    reason_code: str  # R01 ..
    original_trace: str  # 15 digits
    original_rdfi: str  # 8 digits
    trace_number: str  # the return entry's own trace number
    date_of_death: str = ""  # YYMMDD for R14/R15, else blank
    addenda_info: str = ""


@dataclass(frozen=True)
class NocAddenda:
    """Addenda type 98 on a notification of change (COR batch)."""

    change_code: str  # C01 ..
    original_trace: str
    original_rdfi: str
    corrected_data: str
    trace_number: str


Addenda = PaymentAddenda | ReturnAddenda | NocAddenda


@dataclass(frozen=True)
class Entry:
    """Entry detail (type 6). ``routing`` is the full 9-digit RDFI routing number."""

    transaction_code: int
    routing: str
    account: str
    amount: int  # minor units (cents)
    individual_id: str
    individual_name: str
    trace_number: str  # 15 digits: ODFI (8) + sequence (7)
    discretionary_data: str = ""  # WEB: payment type code ("S" single, "R" recurring)
    addenda: tuple[Addenda, ...] = ()


@dataclass(frozen=True)
class Batch:
    service_class: int  # 200 mixed, 220 credits, 225 debits
    company_name: str
    company_id: str
    sec_code: str  # PPD, CCD, WEB, COR
    entry_description: str
    effective_date: dt.date
    odfi: str  # 8 digits
    batch_number: int
    entries: tuple[Entry, ...] = ()
    discretionary_data: str = ""
    descriptive_date: str = ""
    settlement_date: str = ""  # Julian day, set by the ACH operator
    originator_status: str = "1"
    message_auth_code: str = ""


@dataclass(frozen=True)
class NachaFile:
    immediate_destination: str  # routing number (9 digits), written right-justified
    immediate_origin: str  # routing number or a 10-character company id
    creation_date: dt.date
    file_id_modifier: str = "A"
    creation_time: str = ""  # HHMM
    destination_name: str = ""
    origin_name: str = ""
    reference_code: str = ""
    priority_code: int = 1
    batches: tuple[Batch, ...] = field(default_factory=tuple)

    def entries(self) -> list[Entry]:
        return [e for b in self.batches for e in b.entries]
