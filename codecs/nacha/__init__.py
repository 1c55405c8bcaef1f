"""NACHA ACH files: ``read(data) -> NachaFile`` and ``write(NachaFile) -> str``."""

from payswitch.codecs.nacha.errors import NachaError
from payswitch.codecs.nacha.model import (
    Batch,
    Entry,
    NachaFile,
    NocAddenda,
    PaymentAddenda,
    ReturnAddenda,
)
from payswitch.codecs.nacha.reader import STRICT, Relaxations, read
from payswitch.codecs.nacha.routing import check_digit, is_valid_routing
from payswitch.codecs.nacha.writer import write

__all__ = [
    "STRICT", "Batch", "Entry", "NachaError", "NachaFile", "NocAddenda", "PaymentAddenda",
    "Relaxations", "ReturnAddenda", "check_digit", "is_valid_routing", "read", "write",
]
