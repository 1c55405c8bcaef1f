"""Visa Base II outgoing clearing file: 168-byte TCRs (transaction component records).

Layouts followed: Visa "Base II Clearing — Interchange Formats" as publicly
summarised, TC05/06/07 TCR0 (positions below) and the TC90 / TC91 / TC92 header and
trailers. No implementation of Base II exists on PyPI to check against (cardutil has
none), so the positions are ours to keep honest: every layout is a table here, and
``Layout`` checks at import time that it tiles 168 positions. TCR1 and TCR5 carry only
the fields we fill (terminal and card acceptor id; transaction id, authorized amount,
response code and product id) at the positions in their tables; the rest is reserved
(blank).

File::

    TC90 header | batch ... | TC92 file trailer
    batch = (TCR0 [TCR1] [TCR5]) per presentment ... | TC91 batch trailer

Records are ASCII, exactly 168 bytes, no line ends. Trailer figures: number of
monetary transactions (presentments), number of transactions (transaction-level
records in scope, the trailer included: for TC91 the batch's TCR0s + 1, for TC92 the
TC90, every TCR0, every TC91 and itself), number of TCRs (every record in scope, the
trailer included) and the source-amount hash total (the sum of all amounts, credits
included, as Visa's hash totals are unsigned). ``read`` checks them all and names the
record that disagrees.

A third-party sample of real Base II records agrees with these TCR0 positions (PAN
and extension ``000``, ARN with a valid Luhn digit, purchase date, destination and
source amount and currency, merchant name, city, alpha-2 country, MCC, usage code,
reason code, authorization code, POS entry mode, central processing date) and with
the TC91/TC92 positions (BIN, YYDDD, amounts, counts, batch number, zeros and blanks
in the reserved parts), and with TCR5's first fields (transaction identifier 5-19,
authorized amount 20-31, its currency 32-34, response code 35-36). Where TCR1's
terminal and card acceptor ids and TCR5's product id sit is our choice, unchecked.
"""

from __future__ import annotations

from datetime import date, timedelta

from payswitch.codecs.clearing.errors import ClearingError
from payswitch.codecs.clearing.fixed import Fld, Layout
from payswitch.codecs.clearing.model import (
    ClearingFile,
    Kind,
    Presentment,
    alpha2,
    alpha3,
    check_file,
    check_presentment,
)

RECORD_BYTES = 168
TC_BY_KIND: dict[Kind, str] = {"sale": "05", "credit": "06", "cash": "07"}
KIND_BY_TC: dict[str, Kind] = {v: k for k, v in TC_BY_KIND.items()}
DEFAULT_BATCH_SIZE = 500


def _blank(name: str, start: int, length: int) -> Fld:
    return Fld(name, start, length, "c", " " * length)


TCR0 = Layout("TCR0", RECORD_BYTES, [
    Fld("tc", 1, 2, "n"), Fld("tcq", 3, 1, "c", "0"), Fld("tcsn", 4, 1, "c", "0"),
    Fld("account_number", 5, 16), Fld("account_extension", 21, 3),  # see _pan_out
    _blank("floor_crb_pcas", 24, 3),
    Fld("arn", 27, 23, "n"),
    Fld("acquirer_business_id", 50, 8, "c", "0" * 8),
    Fld("purchase_date", 58, 4, "n"),  # MMDD
    Fld("destination_amount", 62, 12, "c", "0" * 12),  # filled by Visa
    _blank("destination_currency", 74, 3),
    Fld("source_amount", 77, 12, "n"), Fld("source_currency", 89, 3, "n"),
    Fld("merchant_name", 92, 25), Fld("merchant_city", 117, 13),
    Fld("merchant_country", 130, 3),  # ISO 3166 alpha-2, blank-filled
    Fld("mcc", 133, 4, "n"),
    _blank("merchant_zip_state", 137, 8),
    _blank("payment_service_forms", 145, 2),
    Fld("usage_code", 147, 1, "c", "1"),  # first presentment
    Fld("reason_code", 148, 2, "c", "00"),
    Fld("settlement_flag", 150, 1, "c", "9"),  # Visa decides the settlement service
    _blank("aci", 151, 1),
    Fld("auth_code", 152, 6),
    _blank("terminal_fee_chid_collection", 158, 4),
    Fld("pos_entry_mode", 162, 2, "c", "00"),
    Fld("central_processing_date", 164, 4, "n"),  # YDDD
    Fld("reimbursement_attribute", 168, 1, "c", "0"),
])

TCR1 = Layout("TCR1", RECORD_BYTES, [
    Fld("tc", 1, 2, "n"), Fld("tcq", 3, 1, "c", "0"), Fld("tcsn", 4, 1, "c", "1"),
    _blank("reserved_5", 5, 116),
    Fld("terminal_id", 121, 8), Fld("merchant_id", 129, 15),
    _blank("reserved_144", 144, 25),
])

TCR5 = Layout("TCR5", RECORD_BYTES, [
    Fld("tc", 1, 2, "n"), Fld("tcq", 3, 1, "c", "0"), Fld("tcsn", 4, 1, "c", "5"),
    Fld("transaction_id", 5, 15),
    Fld("authorized_amount", 20, 12),  # blank when not given
    Fld("authorization_currency", 32, 3),
    Fld("authorization_response_code", 35, 2, "c", "00"),  # presentments are approvals
    _blank("validation_code", 37, 4),
    Fld("product_id", 41, 3),
    _blank("reserved_44", 44, 125),
])

TC90 = Layout("TC90", RECORD_BYTES, [
    Fld("tc", 1, 2, "c", "90"), Fld("tcq", 3, 1, "c", "0"), Fld("tcsn", 4, 1, "c", "0"),
    Fld("processing_bin", 5, 6, "n"), Fld("processing_date", 11, 5, "n"),  # YYDDD
    _blank("reserved_16", 16, 16),
    Fld("test_option", 32, 4),  # "TEST" or blank
    _blank("reserved_36", 36, 38),
    Fld("file_id", 74, 3, "n"),
    _blank("reserved_77", 77, 92),
])


def _trailer(tc: str) -> Layout:
    return Layout(f"TC{tc}", RECORD_BYTES, [
        Fld("tc", 1, 2, "c", tc), Fld("tcq", 3, 1, "c", "0"), Fld("tcsn", 4, 1, "c", "0"),
        Fld("processing_bin", 5, 6, "n"), Fld("processing_date", 11, 5, "n"),
        Fld("destination_amount", 16, 15, "c", "0" * 15),
        Fld("monetary_transactions", 31, 12, "n"),
        Fld("batch_number", 43, 6, "n"),  # TC92: number of batches
        Fld("tcr_count", 49, 12, "n"),
        Fld("reserved_61", 61, 6, "c", "0" * 6),
        _blank("center_batch_id", 67, 8),
        Fld("transactions", 75, 9, "n"),
        Fld("reserved_84", 84, 18, "c", "0" * 18),
        Fld("source_amount", 102, 15, "n"),
        Fld("reserved_117", 117, 45, "c", "0" * 45),
        _blank("reserved_162", 162, 7),
    ])


TC91 = _trailer("91")
TC92 = _trailer("92")


def _yyddd(d: date) -> str:
    return f"{d.year % 100:02d}{d.timetuple().tm_yday:03d}"


def _ydddd(d: date) -> str:
    return f"{d.year % 10}{d.timetuple().tm_yday:03d}"


# -- writer ---------------------------------------------------------------------------

def _pan_out(pan: str, record: int) -> tuple[str, str]:
    """Account number (16) and extension (3): a 16-digit PAN has extension ``000`` (as
    Visa writes it); other lengths are left-justified and blank-filled over the 19."""
    if len(pan) == 16:
        return pan, "000"
    if len(pan) == 19 and pan.endswith("000"):
        raise ClearingError("a 19-digit PAN ending in 000 reads back as 16 digits in Base II",
                            record=record, field="pan")
    wide = pan.ljust(19)
    return wide[:16], wide[16:]


def _pan_in(v: dict[str, str]) -> str:
    if v["account_extension"] == "000" and len(v["account_number"]) == 16:
        return v["account_number"]
    return (v["account_number"].ljust(16) + v["account_extension"]).rstrip(" ")


def presentment_records(p: Presentment, file_date: date, record: int) -> list[str]:
    tc = TC_BY_KIND[p.kind]
    account, extension = _pan_out(p.pan, record)
    out = [TCR0.encode({
        "tc": tc, "account_number": account, "account_extension": extension, "arn": p.arn,
        "purchase_date": p.txn_date.strftime("%m%d"),
        "source_amount": p.amount_minor, "source_currency": p.currency,
        "merchant_name": p.merchant_name, "merchant_city": p.merchant_city,
        "merchant_country": alpha2(p.merchant_country), "mcc": p.mcc,
        "auth_code": p.auth_code,
        "central_processing_date": _ydddd(file_date),
    }, record)]
    if p.terminal_id or p.merchant_id:
        out.append(TCR1.encode({"tc": tc, "terminal_id": p.terminal_id,
                                "merchant_id": p.merchant_id}, record))
    if p.transaction_id or p.auth_amount_minor is not None or p.product_id:
        has_auth = p.auth_amount_minor is not None
        out.append(TCR5.encode({
            "tc": tc, "transaction_id": p.transaction_id,
            "authorized_amount": f"{p.auth_amount_minor:012d}" if has_auth else "",
            "authorization_currency": p.currency if has_auth else "",
            "product_id": p.product_id,
        }, record))
    return out


def write(f: ClearingFile, batch_size: int = DEFAULT_BATCH_SIZE) -> bytes:
    """The whole file as bytes. Refuses (ClearingError naming the presentment's first
    record) anything its reader would not give back unchanged."""
    check_file(f)
    if not 1 <= batch_size <= 999_999:
        raise ClearingError("batch_size is not 1..999999", field="batch_size")
    head = {"processing_bin": f.sender_id, "processing_date": _yyddd(f.file_date)}
    lines = [TC90.encode({**head, "test_option": "TEST" if f.test else "",
                          "file_id": f.file_seq}, 1)]
    file_amount = 0
    batches = [f.presentments[i:i + batch_size]
               for i in range(0, len(f.presentments), batch_size)]
    for number, batch in enumerate(batches, start=1):
        first = len(lines)
        for p in batch:
            check_presentment(p, record=len(lines) + 1)
            lines.extend(presentment_records(p, f.file_date, len(lines) + 1))
        amount = sum(p.amount_minor for p in batch)
        file_amount += amount
        lines.append(TC91.encode({**head, "monetary_transactions": len(batch),
                                  "batch_number": number,
                                  "tcr_count": len(lines) - first + 1,
                                  "transactions": len(batch) + 1, "source_amount": amount},
                                 len(lines) + 1))
    n = len(f.presentments)
    lines.append(TC92.encode({**head, "monetary_transactions": n,
                              "batch_number": len(batches), "tcr_count": len(lines) + 1,
                              "transactions": n + len(batches) + 2,
                              "source_amount": file_amount},
                             len(lines) + 1))
    return "".join(lines).encode("ascii")


# -- reader ---------------------------------------------------------------------------

def split_records(data: bytes) -> list[str]:
    """168-byte records as text; a short last record or non-ASCII is an error."""
    if not isinstance(data, (bytes, bytearray)):
        raise ClearingError("file is not bytes")
    whole, rest = divmod(len(data), RECORD_BYTES)
    if rest:
        raise ClearingError(f"truncated: {rest} of {RECORD_BYTES} bytes", record=whole + 1)
    out = []
    for i in range(whole):
        chunk = bytes(data[i * RECORD_BYTES:(i + 1) * RECORD_BYTES])
        try:
            out.append(chunk.decode("ascii"))
        except UnicodeDecodeError:
            raise ClearingError("record is not ASCII", record=i + 1) from None
    return out


def _purchase_date(mmdd: str, file_date: date, record: int) -> date:
    """Base II carries MMDD only: the year is the latest one that puts the purchase on or
    before the processing date (as Visa reads it)."""
    month, day = int(mmdd[:2]), int(mmdd[2:])
    for year in range(file_date.year, file_date.year - 8, -1):
        try:
            d = date(year, month, day)
        except ValueError:
            continue
        if d <= file_date:
            return d
    raise ClearingError("purchase date is not a date", record=record, field="purchase_date")


def _file_date(yyddd: str, record: int) -> date:
    yy, ddd = int(yyddd[:2]), int(yyddd[2:])
    year = 2000 + yy
    if not 1 <= ddd <= (366 if year % 4 == 0 else 365):
        raise ClearingError("processing date is not YYDDD", record=record,
                            field="processing_date")
    return date(year, 1, 1) + timedelta(days=ddd - 1)


class _Reader:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.presentments: list[Presentment] = []
        self.batch: list[Presentment] = []
        self.batch_start = 1  # index of the batch's first record
        self.batches = 0

    def run(self) -> ClearingFile:
        if not self.lines:
            raise ClearingError("empty file: no TC90 header")
        head = TC90.decode(self.lines[0], 1) if self.lines[0][:2] == "90" else None
        if head is None:
            raise ClearingError("first record is not a TC90 header", record=1)
        self.file_date = _file_date(head["processing_date"], 1)
        self.head = head
        i = 1
        while i < len(self.lines):
            tc = self.lines[i][:2]
            if tc in KIND_BY_TC:
                i = self._presentment(i)
            elif tc == "91":
                self._batch_trailer(i)
                i += 1
            elif tc == "92":
                self._file_trailer(i)
                return ClearingFile(
                    sender_id=head["processing_bin"], file_date=self.file_date,
                    file_seq=int(head["file_id"]), presentments=tuple(self.presentments),
                    test=head["test_option"] == "TEST")
            else:
                raise ClearingError("unknown transaction code", record=i + 1, field="tc")
        raise ClearingError("no TC92 file trailer", record=len(self.lines))

    def _presentment(self, i: int) -> int:
        rec = i + 1
        line = self.lines[i]
        if line[3] != "0":
            raise ClearingError("TCR without its TCR0", record=rec, field="tcsn")
        tc = line[:2]
        v = TCR0.decode(line, rec)
        extra: dict[str, str] = {}
        j = i + 1
        for tcsn, layout in (("1", TCR1), ("5", TCR5)):
            if j < len(self.lines) and self.lines[j][:2] == tc and self.lines[j][3] == tcsn:
                extra.update(layout.decode(self.lines[j], j + 1))
                j += 1
        if v["central_processing_date"] != _ydddd(self.file_date):
            raise ClearingError("central processing date is not the file's", record=rec,
                                field="central_processing_date")
        auth = extra.get("authorized_amount", "")
        if auth and not (auth.isascii() and auth.isdigit() and len(auth) == 12):
            raise ClearingError("authorized amount is not digits", record=j,
                                field="authorized_amount")
        p = Presentment(
            kind=KIND_BY_TC[tc], pan=_pan_in(v), amount_minor=int(v["source_amount"]),
            currency=v["source_currency"],
            txn_date=_purchase_date(v["purchase_date"], self.file_date, rec),
            arn=v["arn"], auth_code=v["auth_code"], mcc=v["mcc"],
            merchant_name=v["merchant_name"], merchant_city=v["merchant_city"],
            merchant_country=alpha3(v["merchant_country"], rec),
            terminal_id=extra.get("terminal_id", ""),
            merchant_id=extra.get("merchant_id", ""),
            transaction_id=extra.get("transaction_id", ""),
            auth_amount_minor=int(auth) if auth else None,
            product_id=extra.get("product_id", ""))
        check_presentment(p, record=rec)
        self.batch.append(p)
        return j

    def _check(self, v: dict[str, str], rec: int, *, count: int, transactions: int,
               tcrs: int, amount: int, number: int) -> None:
        if v["processing_bin"] != self.head["processing_bin"] or \
                v["processing_date"] != self.head["processing_date"]:
            raise ClearingError("trailer BIN or date differs from the header", record=rec)
        for name, want in (("monetary_transactions", count), ("transactions", transactions),
                           ("tcr_count", tcrs), ("source_amount", amount),
                           ("batch_number", number)):
            if int(v[name]) != want:
                raise ClearingError(f"trailer {name} does not match the records",
                                    record=rec, field=name)

    def _batch_trailer(self, i: int) -> None:
        v = TC91.decode(self.lines[i], i + 1)
        self.batches += 1
        self._check(v, i + 1, count=len(self.batch), transactions=len(self.batch) + 1,
                    tcrs=i - self.batch_start + 1,
                    amount=sum(p.amount_minor for p in self.batch), number=self.batches)
        self.presentments.extend(self.batch)
        self.batch = []
        self.batch_start = i + 1

    def _file_trailer(self, i: int) -> None:
        if self.batch:
            raise ClearingError("presentments after the last TC91 batch trailer",
                                record=i + 1)
        if i != len(self.lines) - 1:
            raise ClearingError("records after the TC92 file trailer", record=i + 2)
        v = TC92.decode(self.lines[i], i + 1)
        n = len(self.presentments)
        self._check(v, i + 1, count=n, transactions=n + self.batches + 2, tcrs=i + 1,
                    amount=sum(p.amount_minor for p in self.presentments),
                    number=self.batches)


def read(data: bytes) -> ClearingFile:
    """Parse and check a whole file; any fault is a ClearingError naming its record."""
    return _Reader(split_records(data)).run()
