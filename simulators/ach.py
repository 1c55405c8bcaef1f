"""ACH operator simulator (operator + receiving banks), without I/O.

``AchOperator.submit(file_bytes, received_at)`` answers one of our NACHA files the way
an ACH operator and the RDFIs behind it would:

- an acknowledgement: accepted with counts and totals, or rejected with the reader's
  error (line, record type, field) — an operator refuses a whole file it cannot read;
- the settlement date of each batch: same day when the file arrives on a banking day
  before the same-day cut-off and the batch is due today, else the effective date or
  the next banking day after it (banking days are Monday to Friday; no holidays);
- after ``return_after_days`` banking days, a returns file (addenda 99): R01
  insufficient funds, R02 account closed, R03 no account, R04 invalid account number,
  R29 corporate customer advises not authorised (CCD debits), R10 customer advises not
  authorised (consumer debits);
- after ``noc_after_days`` banking days, a notification-of-change file (COR, addenda
  98): C01 corrected account number, C02 corrected routing number.

Which entries come back is decided per entry: first by ``outcomes`` (account number ->
code, like the test cards), then at random for a configured share, seeded by
``seed`` and the entry's trace number, so a run is repeatable and independent of the
order of entries. A code that cannot apply to the entry (R01/R10/R29 on a credit, R29
on a consumer debit) is not used. Answers are NachaFile models; ``nacha.write`` gives
the bytes, which our strict reader accepts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from dataclasses import dataclass, field

from payswitch.codecs import nacha
from payswitch.codecs.nacha import codes

DEBIT_ONLY = frozenset({"R01", "R10", "R29"})
RETURN_CODES = ("R01", "R02", "R03", "R04", "R10", "R29")
CHANGE_CODES = ("C01", "C02")


@dataclass(frozen=True)
class OperatorConfig:
    routing: str = "021000021"  # the operator's routing number: immediate origin of answers
    name: str = "ACH OPERATOR"
    same_day_cutoff_utc: dt.time = dt.time(14, 45)
    return_after_days: int = 2
    noc_after_days: int = 2
    return_share: float = 0.0  # of entries, drawn per entry
    noc_share: float = 0.0
    seed: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)  # account -> R.. / C..


@dataclass(frozen=True)
class Ack:
    accepted: bool
    batches: int = 0
    entries: int = 0
    total_debit: int = 0
    total_credit: int = 0
    reason: str = ""  # why a file was rejected (the NachaError text)


@dataclass(frozen=True)
class Answer:
    ack: Ack
    settlement_dates: dict[int, dt.date] = field(default_factory=dict)  # batch -> date
    returns: nacha.NachaFile | None = None
    returns_date: dt.date | None = None
    nocs: nacha.NachaFile | None = None
    nocs_date: dt.date | None = None


def is_banking_day(d: dt.date) -> bool:
    return d.weekday() < 5


def next_banking_day(d: dt.date) -> dt.date:
    d += dt.timedelta(days=1)
    while not is_banking_day(d):
        d += dt.timedelta(days=1)
    return d


def banking_days_after(d: dt.date, n: int) -> dt.date:
    for _ in range(n):
        d = next_banking_day(d)
    return d


def settlement_date(effective: dt.date, received_at: dt.datetime,
                    cutoff_utc: dt.time) -> dt.date:
    """Same day if received on a banking day before the cut-off, else the next banking
    day; never before the batch's effective date, always on a banking day."""
    received = received_at.astimezone(dt.UTC)
    day = received.date()
    if not is_banking_day(day) or received.time() > cutoff_utc:
        day = next_banking_day(day)
    day = max(day, effective)
    while not is_banking_day(day):
        day += dt.timedelta(days=1)
    return day


def _applies(code: str, entry: nacha.Entry, sec: str) -> bool:
    debit = codes.is_debit(entry.transaction_code)
    if code in DEBIT_ONLY and not debit:
        return False
    if code == "R29":
        return sec == "CCD"
    return not (code == "R10" and sec == "CCD")


def _corrected(code: str, entry: nacha.Entry) -> str:
    if code == "C01":  # the RDFI's right account number: here, the old one with a 9 appended
        return (entry.account + "9")[-17:]
    first8 = f"{(int(entry.routing[:8]) + 1) % 10**8:08d}"
    return first8 + str(nacha.check_digit(first8))


class AchOperator:
    def __init__(self, config: OperatorConfig | None = None) -> None:
        self.config = config or OperatorConfig()
        assert nacha.is_valid_routing(self.config.routing)

    def outcome(self, entry: nacha.Entry, sec: str) -> str | None:
        """The R- or C-code this entry gets, or None."""
        c = self.config
        code = c.outcomes.get(entry.account)
        if code is None:
            rng = random.Random(f"{c.seed}|{entry.trace_number}")
            u = rng.random()
            if u < c.return_share:
                code = rng.choice([r for r in RETURN_CODES if _applies(r, entry, sec)])
            elif u < c.return_share + c.noc_share:
                code = rng.choice(CHANGE_CODES)
        if code is None or (code.startswith("R") and not _applies(code, entry, sec)):
            return None
        return code

    def submit(self, data: bytes | str, received_at: dt.datetime) -> Answer:
        try:
            f = nacha.read(data)
        except nacha.NachaError as e:
            return Answer(Ack(accepted=False, reason=str(e)))
        entries = f.entries()
        debit, credit = nacha.reader.totals(entries)
        ack = Ack(True, len(f.batches), len(entries), debit, credit)
        dates = {b.batch_number: settlement_date(b.effective_date, received_at,
                                                 self.config.same_day_cutoff_utc)
                 for b in f.batches}
        last = max(dates.values(), default=received_at.date())
        returns_date = banking_days_after(last, self.config.return_after_days)
        nocs_date = banking_days_after(last, self.config.noc_after_days)
        returns, nocs = self._answers(f, returns_date, nocs_date)
        return Answer(ack, dates, returns, returns_date if returns else None,
                      nocs, nocs_date if nocs else None)

    def _answers(self, f: nacha.NachaFile, returns_date: dt.date, nocs_date: dt.date):
        ret_batches, noc_batches = [], []
        for b in f.batches:
            picked = [(e, self.outcome(e, b.sec_code)) for e in b.entries]
            rets = [(e, c) for e, c in picked if c and c.startswith("R")]
            chgs = [(e, c) for e, c in picked if c and c.startswith("C")]
            if rets:
                ret_batches.append(self._batch(b, rets, len(ret_batches) + 1, returns_date))
            if chgs:
                noc_batches.append(self._batch(b, chgs, len(noc_batches) + 1, nocs_date))
        return (self._file(f, ret_batches, returns_date, "R"),
                self._file(f, noc_batches, nocs_date, "C"))

    def _batch(self, b: nacha.Batch, picked, number: int, day: dt.date) -> nacha.Batch:
        odfi = self.config.routing[:8]
        entries = []
        for i, (e, code) in enumerate(picked, 1):
            trace = odfi + f"{number:03d}{i:04d}"
            if code.startswith("R"):
                addenda = nacha.ReturnAddenda(code, e.trace_number, e.routing[:8], trace)
                amount = e.amount
            else:
                addenda = nacha.NocAddenda(code, e.trace_number, e.routing[:8],
                                           _corrected(code, e), trace)
                amount = 0
            # x2/x3/x4 -> x1 and x7/x8/x9 -> x6: the automated return / NOC codes
            tx = e.transaction_code - e.transaction_code % 5 + 1
            entries.append(dataclasses.replace(e, transaction_code=tx, amount=amount,
                                               trace_number=trace, addenda=(addenda,)))
        return dataclasses.replace(
            b, service_class=200, sec_code="COR" if picked[0][1].startswith("C") else b.sec_code,
            effective_date=day, settlement_date=f"{day.timetuple().tm_yday:03d}", odfi=odfi,
            batch_number=number, entries=tuple(entries), message_auth_code="")

    def _file(self, original: nacha.NachaFile, batches, day: dt.date,
              modifier: str) -> nacha.NachaFile | None:
        if not batches:
            return None
        odfi = original.batches[0].odfi  # our bank: the answer goes back to it
        return nacha.NachaFile(
            immediate_destination=odfi + str(nacha.check_digit(odfi)),
            immediate_origin=self.config.routing, creation_date=day, creation_time="0600",
            file_id_modifier=modifier, destination_name=original.origin_name[:23],
            origin_name=self.config.name, batches=tuple(batches))
