"""The switch's typed errors, and the ONE place where any error becomes a DE39 code.

Every participant raises; ``response_code_for`` decides what the sender is told.
HSM and ledger errors are in the table.
"""

from __future__ import annotations

from payswitch.codecs.errors import CodecError
from payswitch.hsm.errors import HsmError, HsmInputError, PinBlockError
from payswitch.ledger.types import LedgerError
from payswitch.routing.bins import NoPan, RoutingError, UnknownBin


class SwitchError(Exception):
    """Base of the switch runtime's operating errors."""


class UnknownTerminal(SwitchError):
    """DE41 is not configured (for this listener or source address)."""


class UnknownAcquirer(SwitchError):
    """DE32 does not match the acquirer host the connection belongs to."""


class UnsupportedTransaction(SwitchError):
    """An MTI or processing code this switch does not carry."""


class LinkUnavailable(SwitchError):
    """The issuer link is not signed on; nothing was sent."""


class LinkBusy(SwitchError):
    """The link's in-flight limit is reached; nothing was sent."""


class IssuerTimeout(SwitchError):
    """Sent, and no response in time (or the link dropped after sending): outcome unknown."""


class OriginalNotFound(SwitchError):
    """A reversal whose original transaction is not in the journal."""


class ReversalCardMismatch(SwitchError):
    """A reversal whose card (DE2 / track 2) is not its original's: refused, nothing
    reversed or voided (DE39 25: no original for this card)."""


class ReversalAmountMismatch(SwitchError):
    """A reversal whose DE4 is not its original's amount: refused, nothing reversed or
    voided (DE39 13, invalid amount; partial reversals are not carried)."""


class MacInvalid(SwitchError):
    """A terminal configured with a TAK sent a request without a MAC, or with a wrong
    one: refused before anything else (DE39 63, security violation)."""


class DuplicateStillInFlight(SwitchError):
    """A duplicate waited for its original longer than duplicate_wait_ms."""


class PinKeyMissing(SwitchError):
    """A PIN block arrived but no terminal PIN key or link ZPK is configured for it (or
    the switch has no [hsm]): it is refused, never forwarded untranslated."""


class StoreError(SwitchError):
    """The journal / SAF store failed (database down, statement timeout)."""


class InsufficientFunds(SwitchError):
    """On-us: the hold exceeds the cardholder's available balance (ledger exceeds_credits)."""


class LedgerDeclined(SwitchError):
    """On-us: the ledger refused the hold for another reason (e.g. a burnt id)."""


class LedgerUnavailable(SwitchError):
    """The ledger write failed or timed out: its outcome is unknown (undone by a void)."""


class CompletionRefused(SwitchError):
    """A completion advice with no hold to post, or for more than was held."""


class RiskDeclined(SwitchError):
    """The risk score reached the decline threshold: 59 (suspected fraud)."""


class RiskDeclinedDoNotHonour(RiskDeclined):
    """A risk decline for an issuer whose ``decline_code`` is 05 (do not honour)."""


class CardCheckFailed(SwitchError):
    """In stand-in, a card check the switch made with the issuer's keys failed
    (switch/participants/cardchecks.py): DE39 as the check says (55, 75, 82 or 05)."""

    def __init__(self, message: str, response_code: str) -> None:
        super().__init__(message)
        self.response_code = response_code


# Order matters: the first matching class wins (subclasses before their bases).
_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (CodecError, "30"),  # format error
    (UnknownTerminal, "58"),  # transaction not permitted to terminal
    (MacInvalid, "63"),  # security violation (ISO 8583:1987)
    (UnknownAcquirer, "58"),
    (UnsupportedTransaction, "12"),  # invalid transaction
    (UnknownBin, "15"),  # no such issuer
    (NoPan, "14"),  # invalid card number
    (RoutingError, "15"),
    (OriginalNotFound, "25"),  # unable to locate record
    (ReversalCardMismatch, "25"),  # no such original for this card
    (ReversalAmountMismatch, "13"),  # invalid amount
    (LinkUnavailable, "91"),  # issuer or switch inoperative
    (LinkBusy, "91"),
    (IssuerTimeout, "91"),
    (DuplicateStillInFlight, "91"),
    (RiskDeclinedDoNotHonour, "05"),
    (RiskDeclined, "59"),  # suspected fraud
    (StoreError, "96"),  # system malfunction
    (InsufficientFunds, "51"),  # not sufficient funds
    (LedgerDeclined, "05"),  # do not honour
    (CompletionRefused, "13"),  # invalid amount
    (LedgerUnavailable, "96"),
    (LedgerError, "96"),
    # HSM. A PIN block that does not decrypt to a valid block under the terminal's key
    # (wrong key, corrupted, bad KSN or length) is 81, "PIN cryptographic error"; the
    # cardholder did nothing wrong, so not 55. Everything else from the HSM (device
    # down, busy, key missing or misused) is ours: 96.
    (PinBlockError, "81"),
    (HsmInputError, "81"),
    (PinKeyMissing, "96"),
    (HsmError, "96"),
)


def response_code_for(exc: BaseException) -> str:
    """DE39 for an error; anything unexpected (a bug) is 96, system malfunction."""
    if isinstance(exc, CardCheckFailed):
        return exc.response_code
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return "96"
