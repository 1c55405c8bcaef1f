"""Double-entry ledger on PostgreSQL: TigerBeetle's model (accounts, immutable two-phase
transfers, exact result codes, linked chains), batched writes, a MAC-chained append-only
event store and an MQTT outbox. See ledger/README.md for the contract with the switch.

Imports nothing from payswitch but (at most) codecs.
"""

from .clearing import post_pending_holds
from .events import MacFunction, PaymentState, hmac_sha256, replay
from .ids import new_id
from .money import convert, currency, exponent, fx_legs, rate_from_de10
from .relay import OutboxRelay, RelayConfig
from .schema import migrate
from .store import Ledger, Outcome, Request, new_account
from .types import (
    Account,
    AccountBalance,
    AccountFlags,
    CreateAccountResult,
    CreateTransferResult,
    Event,
    LedgerError,
    StoredTransfer,
    Transfer,
    TransferFlags,
)
from .verify import Report, verify
from .writer import BatchWriter, WriterConfig


def authorization_events(*, payment_id: int, hold_id: int, approved_event_id: int,
                         held_event_id: int, declined_event_id: int, amount_minor: int,
                         currency: str, approved: dict | None = None,
                         declined: dict | None = None) -> tuple[tuple[Event, ...],
                                                                tuple[Event, ...]]:
    """The (on_success, on_failure) events of an authorization hold, linked the way
    ``ledger verify`` checks them: ``approved`` + ``held`` name the hold; ``declined`` does
    not. Payload dicts must not hold a clear PAN (the store refuses Luhn-valid digit runs)."""
    ok = (Event(approved_event_id, "approved", {"response_code": "00", **(approved or {})},
                payment_id=payment_id, transfer_id=hold_id),
          Event(held_event_id, "held", {"amount_minor": amount_minor, "currency": currency},
                payment_id=payment_id, transfer_id=hold_id))
    ko = (Event(declined_event_id, "declined", dict(declined or {}), payment_id=payment_id),)
    return ok, ko


__all__ = [
    "Account", "AccountBalance", "AccountFlags", "BatchWriter", "CreateAccountResult",
    "CreateTransferResult", "Event", "Ledger", "LedgerError", "MacFunction", "Outcome",
    "OutboxRelay", "PaymentState", "RelayConfig", "Report", "Request", "StoredTransfer",
    "Transfer", "TransferFlags", "WriterConfig", "authorization_events", "convert",
    "currency", "exponent", "fx_legs", "hmac_sha256", "migrate", "new_account", "new_id",
    "post_pending_holds", "rate_from_de10", "replay", "verify",
]
