"""ISO 20022 bank messages: model dataclasses, builder, safe parser, XSD validation.

``build(model, store) -> bytes``, ``parse(xml, store) -> model``,
``validate(xml, store) -> version``, ``rejection(error, ...) -> Pacs002``. The
``SchemaStore`` reads the official XSDs from a directory the caller configures.
"""

from payswitch.codecs.iso20022.api import build, parse, rejection, to_element, validate
from payswitch.codecs.iso20022.errors import Iso20022Error, SchemaMissing
from payswitch.codecs.iso20022.model import (
    Account,
    Camt053,
    Camt054,
    Camt056,
    CreditTransfer,
    Entry,
    Notification,
    Pacs002,
    Pacs004,
    Pacs008,
    Pacs028,
    Pain001,
    PaymentInfo,
    PaymentReturn,
    Reason,
    Recall,
    Statement,
    StatusRequest,
    Transfer,
    TxStatus,
)
from payswitch.codecs.iso20022.schemas import VERSIONS, SchemaStore

__all__ = [
    "VERSIONS", "Account", "Camt053", "Camt054", "Camt056", "CreditTransfer", "Entry",
    "Iso20022Error", "Notification", "Pacs002", "Pacs004", "Pacs008", "Pacs028", "Pain001",
    "PaymentInfo", "PaymentReturn", "Reason", "Recall", "SchemaMissing", "SchemaStore",
    "Statement", "StatusRequest", "Transfer", "TxStatus", "build", "parse", "rejection",
    "to_element", "validate",
]
