"""First chargebacks from the networks: Visa Base II TC15/16/17 and Mastercard IPM
1442/450, each with a writer (the network simulators use it) and a reader (the switch).

A chargeback echoes the original presentment (PAN, ARN, purchase date, merchant data,
approval code) with the amount charged back, in the layout of that presentment, plus
a reason code:

- Visa: the original's TCRs with the transaction code of its chargeback (TC15 sales
  draft, TC16 credit voucher, TC17 cash disbursement chargeback: Base II's TC05/06/07
  + 10) and the reason code in TCR0 positions 148-149 (``base2.TCR0``'s
  ``reason_code``); TC90 header and TC91/TC92 trailers with counts and amounts as for
  presentments. Reason codes are Visa's two-digit ones (e.g. 30 services not
  provided, 53 not as described, 83 fraud card-absent).
- Mastercard: the original's data elements in a 1442 message, function code (DE24)
  450 (first chargeback, full amount), DE25 the four-digit message reason code (e.g.
  4837 no cardholder authorization, 4853 cardholder dispute, 4834 duplicate
  processing); the same 1644/697 header and 1644/695 trailer (PDS 0301 amount
  checksum, PDS 0306 count) as presentments, file type (PDS 0105 subfield 1) 001:
  a file from GCMS to the customer.

The readers check the whole file as the presentment readers do (trailers, counts,
amounts, truncation) and name the record of any fault (``ClearingError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from payswitch.codecs.clearing import base2, ipm, vbs
from payswitch.codecs.clearing.errors import ClearingError
from payswitch.codecs.clearing.model import ClearingFile, Presentment

VISA_REASONS = frozenset({"30", "41", "53", "57", "62", "75", "83", "85"})
MASTERCARD_REASONS = frozenset({"4808", "4834", "4837", "4840", "4853", "4863"})
FILE_TYPE_INCOMING = "001"  # PDS 0105 subfield 1: a file from GCMS to the customer
FUNCTION_FIRST_CHARGEBACK = "450"
_TCR0_REASON = slice(147, 149)  # positions 148-149
_TCR0_USAGE = 146  # position 147: 1 first presentment or chargeback, 2 second
FUNCTION_SECOND_PRESENTMENT = "205"


@dataclass(frozen=True)
class Chargeback:
    original: Presentment  # as presented, amount_minor = the amount charged back
    reason_code: str

    @property
    def arn(self) -> str:
        return self.original.arn


@dataclass(frozen=True)
class ChargebackFile:
    sender_id: str  # the network's processing BIN / id
    file_date: date
    file_seq: int
    chargebacks: tuple[Chargeback, ...] = ()
    test: bool = False

    def as_clearing_file(self) -> ClearingFile:
        return ClearingFile(sender_id=self.sender_id, file_date=self.file_date,
                            file_seq=self.file_seq, test=self.test,
                            presentments=tuple(c.original for c in self.chargebacks))


def _check_reason(code: str, allowed: frozenset[str], record: int) -> None:
    if code not in allowed:
        raise ClearingError("reason code is not a known chargeback reason", record=record,
                            field="reason_code")


# -- Visa TC15/16/17 ------------------------------------------------------------------

def _chargeback_tc(tc: str) -> str:
    return f"{int(tc) + 10:02d}"


def write_base2(f: ChargebackFile) -> bytes:
    """The presentment file's records with each TCR's transaction code moved to its
    chargeback code and the reason in TCR0."""
    lines = base2.split_records(base2.write(f.as_clearing_file(), batch_size=999_999))
    reasons = iter(f.chargebacks)
    for i, line in enumerate(lines):
        if line[:2] in base2.KIND_BY_TC:
            if line[3] == "0":
                cb = next(reasons)
                _check_reason(cb.reason_code, VISA_REASONS, i + 1)
                line = line[:_TCR0_REASON.start] + cb.reason_code + line[_TCR0_REASON.stop:]
            lines[i] = _chargeback_tc(line[:2]) + line[2:]
    return "".join(lines).encode("ascii")


def read_base2(data: bytes) -> ChargebackFile:
    lines = base2.split_records(data)
    reasons: list[str] = []
    back = {_chargeback_tc(tc): tc for tc in base2.KIND_BY_TC}
    for i, line in enumerate(lines):
        if line[:2] in base2.KIND_BY_TC:
            raise ClearingError("a presentment in a chargeback file", record=i + 1, field="tc")
        if line[:2] in back:
            if line[3] == "0":
                reason = line[_TCR0_REASON]
                _check_reason(reason, VISA_REASONS, i + 1)
                reasons.append(reason)
                line = line[:_TCR0_REASON.start] + "00" + line[_TCR0_REASON.stop:]
            lines[i] = back[line[:2]] + line[2:]
    f = base2.read("".join(lines).encode("ascii"))
    return ChargebackFile(f.sender_id, f.file_date, f.file_seq, test=f.test, chargebacks=tuple(
        Chargeback(p, r) for p, r in zip(f.presentments, reasons, strict=True)))


# -- Mastercard 1442/450 --------------------------------------------------------------

def _incoming(fields: dict[str, str], fid_from: str, fid_to: str,
              record: int) -> dict[str, str]:
    pds = ipm.parse_pds(fields.get("48", ""), record)
    fid = pds.get("0105", "")
    if fid[:3] != fid_from:
        raise ClearingError("PDS 0105 file type is not a chargeback file's", record=record,
                            field="48")
    pds["0105"] = fid_to + fid[3:]
    return {**fields, "48": ipm.build_pds(pds)}


def write_ipm(f: ChargebackFile, *, blocked: bool = False) -> bytes:
    records = ipm.write_records(f.as_clearing_file())
    out: list[bytes] = []
    for number, raw in enumerate(records, start=1):
        fields = ipm.decode_record(raw, number)
        if fields["t"] == "1644":
            fields = _incoming(fields, ipm.FILE_TYPE_OUTGOING, FILE_TYPE_INCOMING,
                               number)
        else:
            cb = f.chargebacks[number - 2]
            _check_reason(cb.reason_code, MASTERCARD_REASONS, number)
            fields = {**fields, "t": "1442", "24": FUNCTION_FIRST_CHARGEBACK,
                      "25": cb.reason_code}
        out.append(ipm._encode(fields, number))
    data = vbs.write_vbs(out)
    return vbs.block(data) if blocked else data


def read_ipm(data: bytes, *, blocked: bool = False) -> ChargebackFile:
    return _read_ipm(data, blocked, "1442", FUNCTION_FIRST_CHARGEBACK)


def _read_ipm(data: bytes, blocked: bool, mti: str, function: str) -> ChargebackFile:
    incoming = mti == "1442"  # a chargeback file comes from GCMS; a representment goes to it
    records = vbs.read_vbs(data, blocked=blocked)
    if not records:
        raise ClearingError("empty file: no 1644/697 header")
    out: list[bytes] = []
    reasons: list[str] = []
    for number, raw in enumerate(records, start=1):
        fields = ipm.decode_record(raw, number)
        if fields.get("t") == "1644":
            if incoming:
                fields = _incoming(fields, FILE_TYPE_INCOMING, ipm.FILE_TYPE_OUTGOING,
                                   number)
        elif fields.get("t") == mti and fields.get("24") == function:
            reason = fields.pop("25", "")
            _check_reason(reason, MASTERCARD_REASONS, number)
            reasons.append(reason)
            fields = {**fields, "t": "1240", "24": "200"}
        else:
            raise ClearingError(f"not a {mti}/{function} or a 1644 header/trailer",
                                record=number, field="24")
        out.append(ipm._encode(fields, number))
    f = ipm.read(vbs.write_vbs(out))
    return ChargebackFile(f.sender_id, f.file_date, f.file_seq, test=f.test, chargebacks=tuple(
        Chargeback(p, r) for p, r in zip(f.presentments, reasons, strict=True)))


# -- representments (second presentments) ----------------------------------------------
# The acquirer's answer to a chargeback: the original presented again with the
# chargeback's reason. Visa: TC05/06/07 with usage code 2 and the reason code in TCR0;
# Mastercard: 1240 with function code 205 (second presentment, full) and DE25.

def write_representments(f: ChargebackFile, network: str, *, blocked: bool = False) -> bytes:
    if network != "visa":
        return _ipm_second(f, blocked)
    lines = base2.split_records(base2.write(f.as_clearing_file(), batch_size=999_999))
    items = iter(f.chargebacks)
    for i, line in enumerate(lines):
        if line[:2] in base2.KIND_BY_TC and line[3] == "0":
            cb = next(items)
            _check_reason(cb.reason_code, VISA_REASONS, i + 1)
            lines[i] = (line[:_TCR0_USAGE] + "2" + cb.reason_code
                        + line[_TCR0_REASON.stop:])
    return "".join(lines).encode("ascii")


def read_representments(data: bytes, network: str, *, blocked: bool = False,
                        ) -> ChargebackFile:
    if network != "visa":
        return _read_ipm(data, blocked, "1240", FUNCTION_SECOND_PRESENTMENT)
    lines = base2.split_records(data)
    reasons: list[str] = []
    for i, line in enumerate(lines):
        if line[:2] in base2.KIND_BY_TC and line[3] == "0":
            if line[_TCR0_USAGE] != "2":
                raise ClearingError("not a second presentment (usage code 2)", record=i + 1,
                                    field="usage_code")
            reasons.append(line[_TCR0_REASON])
            _check_reason(reasons[-1], VISA_REASONS, i + 1)
            lines[i] = line[:_TCR0_USAGE] + "100" + line[_TCR0_REASON.stop:]
    f = base2.read("".join(lines).encode("ascii"))
    return ChargebackFile(f.sender_id, f.file_date, f.file_seq, test=f.test, chargebacks=tuple(
        Chargeback(p, r) for p, r in zip(f.presentments, reasons, strict=True)))


def _ipm_second(f: ChargebackFile, blocked: bool) -> bytes:
    records = ipm.write_records(f.as_clearing_file())
    out: list[bytes] = []
    for number, raw in enumerate(records, start=1):
        fields = ipm.decode_record(raw, number)
        if fields["t"] == "1240":
            cb = f.chargebacks[number - 2]
            _check_reason(cb.reason_code, MASTERCARD_REASONS, number)
            fields = {**fields, "24": FUNCTION_SECOND_PRESENTMENT, "25": cb.reason_code}
        out.append(ipm._encode(fields, number))
    data = vbs.write_vbs(out)
    return vbs.block(data) if blocked else data


def write(f: ChargebackFile, network: str, *, blocked: bool = False) -> bytes:
    return write_base2(f) if network == "visa" else write_ipm(f, blocked=blocked)


def read(data: bytes, network: str, *, blocked: bool = False) -> ChargebackFile:
    return read_base2(data) if network == "visa" else read_ipm(data, blocked=blocked)
