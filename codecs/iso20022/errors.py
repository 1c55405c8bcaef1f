"""ISO 20022's error type: where in the document (an XPath-like path) and why."""

from __future__ import annotations

from payswitch.codecs.errors import CodecError


class Iso20022Error(CodecError):
    """A document that is not safe, not well-formed, not schema-valid or not coherent.

    ``path`` names the element (``/Document/FIToFICstmrCdtTrf/GrpHdr/NbOfTxs``; ``/``
    for the document as a whole), ``reason`` says what is wrong without quoting the
    value. ``message_type`` and ``msg_id`` are set when they could be read, so that a
    rejection (pacs.002 RJCT) can refer to the original.
    """

    def __init__(self, reason: str, *, path: str = "/", line: int | None = None,
                 message_type: str | None = None, msg_id: str | None = None) -> None:
        self.path = path
        self.line = line
        self.message_type = message_type
        self.msg_id = msg_id
        super().__init__(f"{path}: {reason}")
        self.reason = reason
        self.field = path


class SchemaMissing(Iso20022Error):
    """The configured schema directory has no XSD for this message version."""
