"""The codec's one error type. Its text never carries field values, so never a PAN."""

from __future__ import annotations


class CodecError(ValueError):
    """Bytes that do not decode, or a message that does not encode.

    ``mti`` and ``stan`` are set when they could be read, so that the switch can still
    answer DE39 30 (format error) to the sender.
    """

    def __init__(self, reason: str, *, mti: str | None = None, stan: str | None = None,
                 field: str | None = None) -> None:
        self.reason = reason
        self.mti = mti
        self.stan = stan
        self.field = field
        where = f" (field {field})" if field else ""
        super().__init__(f"{reason}{where}")


class FramingError(CodecError):
    """A frame length the reader will not accept (too long, zero, not digits)."""
