"""The clearing codecs' error: a CodecError that names the record it is about."""

from __future__ import annotations

from payswitch.codecs.errors import CodecError


class ClearingError(CodecError):
    """A clearing file that does not read back, or a batch that will not be written.

    ``record`` is the 1-based number of the record (TCR or IPM message) in the file,
    ``None`` when the fault is the file as a whole. The text never holds a field value,
    so never a PAN.
    """

    def __init__(self, reason: str, *, record: int | None = None,
                 field: str | None = None) -> None:
        self.record = record
        where = f"record {record}: " if record is not None else ""
        super().__init__(f"{where}{reason}", field=field)
