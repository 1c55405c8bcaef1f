"""ACH on the switch side: payouts from the ledger into an outgoing NACHA file at
cut-off, and the operator's answers (returns, notifications of change) back into the
ledger and the payee table.

- ``originate(day)``: every payee whose payable account (in the ledger) has money
  becomes a PPD/CCD credit entry for that balance; the file is recorded (its entries
  by trace number) and ``ledger.ach.originate`` moves the funds to the ACH clearing
  account in one linked chain. A payee's routing and account come from
  ``ach_payees``, so a change notified yesterday is what today's file uses.
- ``settle(day)``: due batches of recorded files, clearing -> settlement.
- ``process(data)``: a returns file (addenda 99) gives each entry's money back to the
  payee's payable account (settlement -> payable, an ``ach_returned`` event with the
  R-code), once per entry; a NOC file (addenda 98) updates the payee's account (C01),
  routing (C02) or both (C03) with an ``ach_changed`` event. Unknown original traces
  are counted and skipped, never a crash.

Tables (``ach_`` prefix, made here): ``ach_payees``, ``ach_files``, ``ach_entries``.
"""

from __future__ import annotations

import datetime as dt
import string
import uuid
from dataclasses import dataclass, field

import psycopg

import payswitch.ledger as L
from payswitch.codecs import nacha
from payswitch.ledger.ach import AchAccounts, ach_id, file_key
from payswitch.ledger.ach import originate as ledger_originate
from payswitch.ledger.ach import settle as ledger_settle
from payswitch.ledger.types import Transfer

SCHEMA = """
create table if not exists ach_payees (
    payee_id text primary key,
    account_id uuid not null,             -- the payee's payable account in the ledger
    name text not null,
    routing text not null,
    account text not null,
    sec_code text not null default 'PPD' check (sec_code in ('PPD', 'CCD')),
    last_change text,
    updated_at timestamptz not null default now()
);
create table if not exists ach_files (
    file_key text primary key,
    day date not null,
    text text not null,
    created_at timestamptz not null default now()
);
create table if not exists ach_entries (
    trace_number text primary key,
    file_key text not null,
    payee_id text not null,
    amount_minor bigint not null,
    state text not null check (state in ('sent', 'returned')),
    return_code text
);
"""
TX_RETURN = 22  # transfer code of a return (settlement -> payable)


@dataclass(frozen=True)
class DeskConfig:
    odfi_routing: str = "091000019"  # ours: our bank's routing number at the operator
    operator_routing: str = "021000021"
    company_name: str = "PAYSWITCH"
    company_id: str = "1234567890"
    origin_name: str = "PAYSWITCH BANK"
    destination_name: str = "ACH OPERATOR"
    accounts: AchAccounts = field(default_factory=lambda: AchAccounts(
        clearing_id=ach_id("clearing"), settlement_id=ach_id("settlement"), ledger=840,
        originate_code=20, settle_code=21))


@dataclass
class Processed:
    returns: int = 0
    returned_minor: int = 0
    changes: int = 0
    unknown: int = 0
    codes: dict[str, int] = field(default_factory=dict)


class AchDesk:
    def __init__(self, dsn: str, mac: L.MacFunction, config: DeskConfig | None = None):
        self.cfg = config or DeskConfig()
        self.led = L.Ledger(dsn, mac=mac, migrate=True)
        self.db = psycopg.connect(dsn, autocommit=True)
        self.db.execute(SCHEMA)
        a = self.cfg.accounts
        self.led.create_accounts([L.new_account(a.clearing_id, a.ledger, 30),
                                  L.new_account(a.settlement_id, a.ledger, 31)])

    def close(self) -> None:
        self.led.close()
        self.db.close()

    def add_payee(self, payee_id: str, account_id: int, name: str, routing: str,
                  account: str, sec_code: str = "PPD") -> None:
        self.db.execute(
            "insert into ach_payees (payee_id, account_id, name, routing, account, sec_code)"
            " values (%s, %s, %s, %s, %s, %s) on conflict (payee_id) do nothing",
            (payee_id, uuid.UUID(int=account_id), name, routing, account, sec_code))

    def payee(self, payee_id: str) -> tuple[str, str, str | None]:
        row = self.db.execute("select routing, account, last_change from ach_payees"
                              " where payee_id = %s", (payee_id,)).fetchone()
        assert row is not None
        return row[0], row[1], row[2]

    # -- origination ---------------------------------------------------------------------

    def _modifier(self, day: dt.date) -> str:
        (n,) = self.db.execute("select count(*) from ach_files where day = %s",
                               (day,)).fetchone() or (0,)
        return (string.ascii_uppercase + string.digits)[n]

    def build_file(self, day: dt.date) -> tuple[nacha.NachaFile, dict[str, tuple[str, int]]]:
        """The payout file of ``day`` (None of the ledger moves yet) and trace ->
        (payee, payable account)."""
        payees = self.db.execute("select payee_id, account_id, name, routing, account,"
                                 " sec_code from ach_payees order by payee_id").fetchall()
        balances = {b.id: b.net_credit for b in
                    self.led.lookup_accounts([p[1].int for p in payees])}
        odfi = self.cfg.odfi_routing[:8]
        batches: list[nacha.Batch] = []
        owners: dict[str, tuple[str, int]] = {}
        for sec in ("PPD", "CCD"):
            entries = []
            for pid, acc, name, routing, account, s in payees:
                amount = balances.get(acc.int, 0)
                if s != sec or amount <= 0:
                    continue
                trace = f"{odfi}{len(owners) + 1:07d}"
                owners[trace] = (pid, acc.int)
                entries.append(nacha.Entry(22, routing, account, amount, pid[:15],
                                           name[:22], trace))
            if entries:
                batches.append(nacha.Batch(220, self.cfg.company_name, self.cfg.company_id,
                                           sec, "PAYOUT", day, odfi, len(batches) + 1,
                                           tuple(entries)))
        f = nacha.NachaFile(self.cfg.operator_routing, self.cfg.odfi_routing, day,
                            self._modifier(day), "0000", self.cfg.destination_name,
                            self.cfg.origin_name, batches=tuple(batches))
        return f, owners

    def originate(self, day: dt.date) -> tuple[str, nacha.NachaFile] | None:
        """Cut-off: the file's text once its funds sit in ACH clearing (None: nothing due)."""
        f, owners = self.build_file(day)
        if not f.batches:
            return None
        key = file_key(f)
        text = ledger_originate(self.led, f, lambda e: owners[e.trace_number][1],
                                self.cfg.accounts)
        # the trace numbers restart per file: the entry table is keyed by the file too
        with self.db.transaction():
            self.db.execute("insert into ach_files (file_key, day, text) values (%s, %s, %s)"
                            " on conflict do nothing", (key, day, text))
            for e in f.entries():
                self.db.execute(
                    "insert into ach_entries (trace_number, file_key, payee_id, amount_minor,"
                    " state) values (%s, %s, %s, %s, 'sent') on conflict do nothing",
                    (f"{key}|{e.trace_number}", key, owners[e.trace_number][0], e.amount))
        return text, f

    def settle(self, day: dt.date) -> int:
        total = 0
        for (text,) in self.db.execute("select text from ach_files order by day").fetchall():
            total += ledger_settle(self.led, nacha.read(text), self.cfg.accounts, day)
        return total

    # -- the operator's answers ----------------------------------------------------------

    def _entry(self, original_trace: str) -> tuple[str, str, str, int, str] | None:
        """(key, file_key, payee, amount, state) of the newest entry with that trace."""
        row = self.db.execute(
            "select e.trace_number, e.file_key, e.payee_id, e.amount_minor, e.state"
            " from ach_entries e join ach_files f using (file_key)"
            " where e.trace_number like %s order by f.created_at desc limit 1",
            (f"%|{original_trace}",)).fetchone()
        return (row[0], row[1], row[2], int(row[3]), row[4]) if row else None

    def process(self, data: bytes | str) -> Processed:
        """A returns or NOC file from the operator (NachaError if it cannot be read)."""
        out = Processed()
        for e in nacha.read(data).entries():
            for a in e.addenda:
                if isinstance(a, nacha.ReturnAddenda):
                    self._return(a, out)
                elif isinstance(a, nacha.NocAddenda):
                    self._change(a, out)
        return out

    def _return(self, a: nacha.ReturnAddenda, out: Processed) -> None:
        found = self._entry(a.original_trace)
        if found is None:
            out.unknown += 1
            return
        key, fkey, payee, amount, state = found
        (acc,) = self.db.execute("select account_id from ach_payees where payee_id = %s",
                                 (payee,)).fetchone() or (None,)
        accts = self.cfg.accounts
        t = Transfer(ach_id(fkey, a.original_trace, "return"), accts.settlement_id, acc.int,
                     amount, accts.ledger, TX_RETURN)
        ev = L.Event(ach_id(fkey, a.original_trace, "returned-event"), "ach_returned",
                     {"reason": a.reason_code, "trace": a.original_trace, "payee": payee,
                      "amount_minor": amount}, transfer_id=t.id)
        (res,) = self.led.submit([L.Request((t,), (ev,))])
        if not res.ok:
            raise L.LedgerError(f"ACH return refused by the ledger: {res.results[0]}")
        self.db.execute("update ach_entries set state = 'returned', return_code = %s"
                        " where trace_number = %s", (a.reason_code, key))
        if state == "sent":
            out.returns += 1
            out.returned_minor += amount
            out.codes[a.reason_code] = out.codes.get(a.reason_code, 0) + 1

    def _change(self, a: nacha.NocAddenda, out: Processed) -> None:
        found = self._entry(a.original_trace)
        if found is None:
            out.unknown += 1
            return
        payee = found[2]
        data = a.corrected_data.strip()
        routing, account, _ = self.payee(payee)
        if a.change_code == "C01":
            account = data
        elif a.change_code == "C02":
            routing = data[:9]
        elif a.change_code == "C03":
            routing, account = data[:9], data[9:].strip()
        else:
            out.unknown += 1
            return
        self.db.execute("update ach_payees set routing = %s, account = %s, last_change = %s,"
                        " updated_at = now() where payee_id = %s",
                        (routing, account, a.change_code, payee))
        self.led.append_events([L.Event(ach_id(found[1], a.original_trace, a.change_code),
                                        "ach_changed", {"code": a.change_code,
                                                        "payee": payee})])
        out.changes += 1
        out.codes[a.change_code] = out.codes.get(a.change_code, 0) + 1
