"""NACHA's error type: where (line, record type, field) and why, never a value."""

from __future__ import annotations

from payswitch.codecs.errors import CodecError

RECORD_NAMES = {
    "1": "file header",
    "5": "batch header",
    "6": "entry detail",
    "7": "addenda",
    "8": "batch control",
    "9": "file control",
}


class NachaError(CodecError):
    """A NACHA file that does not read, or a model that does not write.

    ``line`` is 1-based (None when writing), ``record_type`` the record's first
    character. The text never holds a field value: account numbers stay out of logs.
    """

    def __init__(self, reason: str, *, line: int | None = None,
                 record_type: str | None = None, field: str | None = None) -> None:
        self.line = line
        self.record_type = record_type
        parts = []
        if line is not None:
            parts.append(f"line {line}")
        if record_type is not None:
            parts.append(f"{RECORD_NAMES.get(record_type, 'record')} ({record_type})")
        where = ", ".join(parts)
        super().__init__(f"{where}: {reason}" if where else reason, field=field)
