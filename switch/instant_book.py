"""Instant credit transfers in the ledger and in PostgreSQL: the durable, synchronous
half of switch/instant.py (which owns the link and the clock).

Outgoing: a pending transfer customer -> scheme settlement account when the payment is
prepared, posted on ACSC, voided on RJCT or timeout. Every ledger id derives from the
payment's transaction id, so a rerun after a crash answers ``exists`` and the ledger's
own rule (a pending transfer is posted *or* voided, once) makes each payment settle or
reverse exactly once. Incoming: settlement -> beneficiary; a recall (camt.056) moves it
back (beneficiary -> settlement) and answers with a pacs.004, or refuses.

Tables (created here, ``instant_`` prefix): ``instant_payments`` (one row per outgoing
transaction, state pending -> settled | reversed, or rejected before sending) and
``instant_inbound`` (credited -> returned, or rejected).
"""

from __future__ import annotations

import base64
import hashlib
import logging

import psycopg

import payswitch.ledger as L
from payswitch.codecs.iso20022 import model as m
from payswitch.ledger.types import CreateTransferResult as R
from payswitch.ledger.types import Transfer, TransferFlags

log = logging.getLogger("payswitch.instant")

SCHEMA = """
create table if not exists instant_payments (
    tx_id text primary key,
    msg_id text not null,
    end_to_end_id text not null,
    debtor_iban text not null,
    creditor_iban text not null,
    amount_minor bigint not null check (amount_minor > 0),
    currency text not null,
    state text not null check (state in ('pending', 'settled', 'reversed', 'rejected')),
    reason text,
    resolved_by text,
    created_at timestamptz not null default now(),
    resolved_at timestamptz
);
create table if not exists instant_inbound (
    tx_id text not null,
    instructing_agent text not null,
    end_to_end_id text not null,
    msg_id text not null,
    creditor_iban text not null,
    amount_minor bigint not null check (amount_minor > 0),
    currency text not null,
    state text not null check (state in ('credited', 'returned', 'rejected')),
    reason text,
    created_at timestamptz not null default now(),
    primary key (instructing_agent, tx_id)
);
"""

CODE_CUSTOMER, CODE_SETTLEMENT, CODE_FUNDING = 40, 41, 42  # account codes
TX_HOLD, TX_INBOUND, TX_RETURN, TX_FUND = 40, 41, 42, 43  # transfer codes
FINAL = ("settled", "reversed", "rejected")


def det_id(*parts: object) -> int:
    h = hashlib.sha256("|".join(map(str, ("payswitch-instant", *parts))).encode()).digest()
    return int.from_bytes(h[:16], "big") or 1


def ref(prefix: str, *parts: object) -> str:
    """A message or transaction id (Max35Text) derived from ``parts``. Base32, not hex:
    a hex digest has a Luhn-valid run of 13+ digits often enough (a few demo runs in
    a hundred) for the ledger's PAN guard to refuse the event that carries it."""
    h = base64.b32encode(hashlib.sha256("|".join(map(str, parts)).encode()).digest())
    return (prefix + h.decode())[:35]


def customer_account_id(iban: str) -> int:
    return det_id("customer", iban)


def settlement_account_id(currency: str) -> int:
    return det_id("settlement", currency)


def known_currency(currency: str) -> bool:
    try:
        L.currency(currency)
    except L.LedgerError:
        return False
    return True


def _ledger_no(currency: str) -> int:
    return L.currency(currency).numeric


class InstantBook:
    """One ledger connection and one table connection; one caller at a time."""

    def __init__(self, dsn: str, mac: L.MacFunction, *, hold_timeout_s: int = 7 * 86400):
        self.led = L.Ledger(dsn, mac=mac, migrate=True)
        self.db = psycopg.connect(dsn, autocommit=True)
        self.db.execute(SCHEMA)
        self.hold_timeout_s = hold_timeout_s

    def close(self) -> None:
        self.led.close()
        self.db.close()

    # -- accounts ----------------------------------------------------------------------

    def ensure_settlement(self, currency: str) -> None:
        self.led.create_accounts([L.new_account(settlement_account_id(currency),
                                                _ledger_no(currency), CODE_SETTLEMENT)])

    def open_customer(self, iban: str, currency: str, funds_minor: int = 0) -> int:
        """A funded customer account (tests and the demo stand in for core banking)."""
        n = _ledger_no(currency)
        acc, funding = customer_account_id(iban), det_id("funding", currency)
        self.led.create_accounts([
            L.new_account(funding, n, CODE_FUNDING),
            L.new_account(acc, n, CODE_CUSTOMER, debits_must_not_exceed_credits=True)])
        self.ensure_settlement(currency)
        if funds_minor:
            self.led.create_transfers([Transfer(det_id("fund", iban, funds_minor), funding,
                                                acc, funds_minor, n, TX_FUND)])
        return acc

    def balance(self, iban: str) -> int:
        (a,) = self.led.lookup_accounts([customer_account_id(iban)])
        return a.credits_posted - a.debits_posted

    # -- outgoing ----------------------------------------------------------------------

    def prepare(self, ct: m.CreditTransfer, msg_id: str) -> str | None:
        """Row + hold. None: pending, send it. Otherwise nothing is sent: the reason
        code it was refused with now (AM04 no funds, AC01 unknown debtor account), or
        the final state a previous run left (settled, reversed, rejected)."""
        self.db.execute(
            "insert into instant_payments (tx_id, msg_id, end_to_end_id, debtor_iban,"
            " creditor_iban, amount_minor, currency, state) values"
            " (%s, %s, %s, %s, %s, %s, %s, 'pending') on conflict do nothing",
            (ct.tx_id, msg_id, ct.end_to_end_id, ct.debtor_account.id,
             ct.creditor_account.id, ct.amount_minor, ct.currency))
        state = self.state(ct.tx_id)
        if state != "pending":
            return state or "rejected"
        if not known_currency(ct.currency):
            self._finish(ct.tx_id, "rejected", "AM03", "local")  # not allowed currency
            return "AM03"
        self.ensure_settlement(ct.currency)
        pid, hold = det_id("payment", ct.tx_id), det_id("hold", ct.tx_id)
        ok, ko = L.authorization_events(
            payment_id=pid, hold_id=hold, approved_event_id=det_id("ev-approved", ct.tx_id),
            held_event_id=det_id("ev-held", ct.tx_id),
            declined_event_id=det_id("ev-declined", ct.tx_id), amount_minor=ct.amount_minor,
            currency=ct.currency, approved={"scheme": "instant", "tx_id": ct.tx_id},
            declined={"scheme": "instant", "tx_id": ct.tx_id})
        t = Transfer(hold, customer_account_id(ct.debtor_account.id),
                     settlement_account_id(ct.currency), ct.amount_minor,
                     _ledger_no(ct.currency), TX_HOLD, TransferFlags.PENDING,
                     timeout_s=self.hold_timeout_s)
        (out,) = self.led.submit([L.Request((t,), ok, ko)])
        if out.ok:
            return None
        code = "AM04" if out.results[0] is R.EXCEEDS_CREDITS else "AC01"
        self._finish(ct.tx_id, "rejected", code, "local")
        return code

    def state(self, tx_id: str) -> str | None:
        row = self.db.execute("select state from instant_payments where tx_id = %s",
                              (tx_id,)).fetchone()
        return row[0] if row else None

    def pending(self) -> list[tuple[str, str, str]]:
        """(tx_id, msg_id, end_to_end_id) of every payment not yet settled or reversed."""
        return self.db.execute("select tx_id, msg_id, end_to_end_id from instant_payments"
                               " where state = 'pending' order by created_at").fetchall()

    def tx_of_msg(self, msg_id: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "select tx_id from instant_payments where msg_id = %s", (msg_id,))]

    def resolve(self, tx_id: str, status: str, reason: str | None, by: str) -> str | None:
        """Apply a final status (ACSC post, RJCT void). Idempotent; returns the state."""
        state = self.state(tx_id)
        if state != "pending":
            return state
        pid, hold = det_id("payment", tx_id), det_id("hold", tx_id)
        if status == "ACSC":
            t = Transfer(det_id("post", tx_id), flags=TransferFlags.POST_PENDING_TRANSFER,
                         pending_id=hold)
            event = L.Event(det_id("ev-settled", tx_id), "instant_settled",
                            {"tx_id": tx_id, "by": by}, payment_id=pid, transfer_id=hold)
        else:
            t = Transfer(det_id("void", tx_id), flags=TransferFlags.VOID_PENDING_TRANSFER,
                         pending_id=hold)
            event = L.Event(det_id("ev-reversed", tx_id), "instant_reversed",
                            {"tx_id": tx_id, "by": by, "reason": reason},
                            payment_id=pid, transfer_id=hold)
        (out,) = self.led.submit([L.Request((t,), (event,))])
        result = out.results[0]
        if out.ok:
            new = "settled" if status == "ACSC" else "reversed"
        elif result in (R.PENDING_TRANSFER_ALREADY_POSTED, R.PENDING_TRANSFER_ALREADY_VOIDED,
                        R.PENDING_TRANSFER_EXPIRED):
            # the ledger decided before (e.g. a late answer contradicting a timeout):
            # its word stands, and the disagreement is logged for the operator
            new = "settled" if result is R.PENDING_TRANSFER_ALREADY_POSTED else "reversed"
            log.warning("instant_status_conflict",
                        extra={"fields": {"tx_id": tx_id, "status": status, "ledger": result}})
        elif result is R.PENDING_TRANSFER_NOT_FOUND and status != "ACSC":
            # a crash between the row and the hold: nothing held, nothing sent, and
            # the peer confirms it never received it; reversed with nothing to undo
            new = "reversed"
        else:
            raise L.LedgerError(f"instant {tx_id}: ledger answered {result}")
        self._finish(tx_id, new, reason, by)
        return new

    def _finish(self, tx_id: str, state: str, reason: str | None, by: str) -> None:
        self.db.execute("update instant_payments set state = %s, reason = %s,"
                        " resolved_by = %s, resolved_at = now()"
                        " where tx_id = %s and state = 'pending'", (state, reason, by, tx_id))

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute(
            "select state, count(*) from instant_payments group by state").fetchall())

    # -- incoming ----------------------------------------------------------------------

    def credit(self, ct: m.CreditTransfer, instructing_agent: str, msg_id: str) -> m.TxStatus:
        """Post an inbound credit to the beneficiary (once per agent + tx id)."""
        if not known_currency(ct.currency):
            return m.TxStatus(ct.end_to_end_id, "RJCT", ct.tx_id, m.Reason("AM03"))
        self.ensure_settlement(ct.currency)
        t = Transfer(det_id("in", instructing_agent, ct.tx_id),
                     settlement_account_id(ct.currency),
                     customer_account_id(ct.creditor_account.id), ct.amount_minor,
                     _ledger_no(ct.currency), TX_INBOUND)
        event = L.Event(det_id("ev-in", instructing_agent, ct.tx_id), "instant_credited",
                        {"tx_id": ct.tx_id, "from": instructing_agent},
                        payment_id=det_id("in-payment", instructing_agent, ct.tx_id),
                        transfer_id=t.id)
        (out,) = self.led.submit([L.Request((t,), (event,))])
        state, reason = ("credited", None) if out.ok else ("rejected", "AC03")
        self.db.execute(
            "insert into instant_inbound (tx_id, instructing_agent, end_to_end_id, msg_id,"
            " creditor_iban, amount_minor, currency, state, reason) values"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing",
            (ct.tx_id, instructing_agent, ct.end_to_end_id, msg_id, ct.creditor_account.id,
             ct.amount_minor, ct.currency, state, reason))
        return m.TxStatus(ct.end_to_end_id, "ACSC" if out.ok else "RJCT", ct.tx_id,
                          None if out.ok else m.Reason(reason))

    def recall(self, r: m.Recall, assigner: str) -> m.PaymentReturn | m.TxStatus:
        """Return the recalled credit (a pacs.004 entry), or a negative answer."""
        row = self.db.execute(
            "select state, creditor_iban, amount_minor, currency, msg_id from instant_inbound"
            " where instructing_agent = %s and tx_id = %s", (assigner, r.original_tx_id)
        ).fetchone()
        if row is None or row[0] == "rejected":
            return self._refuse(r, "NOOR")  # no original transaction received
        state, iban, amount, currency, msg_id = row
        if state == "returned":
            return self._refuse(r, "ARDT")  # already returned
        t = Transfer(det_id("return", assigner, r.original_tx_id), customer_account_id(iban),
                     settlement_account_id(currency), amount, _ledger_no(currency), TX_RETURN)
        event = L.Event(det_id("ev-return", assigner, r.original_tx_id), "instant_returned",
                        {"tx_id": r.original_tx_id, "reason": r.reason.code},
                        payment_id=det_id("in-payment", assigner, r.original_tx_id),
                        transfer_id=t.id)
        (out,) = self.led.submit([L.Request((t,), (event,))])
        if not out.ok:
            return self._refuse(r, "AM04")  # the beneficiary no longer has the funds
        self.db.execute("update instant_inbound set state = 'returned', reason = %s"
                        " where instructing_agent = %s and tx_id = %s",
                        (r.reason.code, assigner, r.original_tx_id))
        return m.PaymentReturn(ref("RT", assigner, r.original_tx_id), msg_id,
                               "pacs.008.001.08", r.original_end_to_end_id, r.original_tx_id,
                               amount, currency, m.Reason("FOCR"))  # following cancellation

    @staticmethod
    def _refuse(r: m.Recall, code: str) -> m.TxStatus:
        return m.TxStatus(r.original_end_to_end_id, "RJCT", r.original_tx_id, m.Reason(code))
