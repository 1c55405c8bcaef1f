"""Structured JSON logs, one object per line on stderr. PANs are masked here too.

``log(event, **fields)``: the event name is the message; values named ``pan`` are
masked, and a ``Message`` is rendered through its own masking ``repr``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from payswitch.codecs.pan import mask_pan

LOGGER = logging.getLogger("payswitch.switch")
_SECRET_KEYS = frozenset({"track2", "pin_block", "emv", "cvv"})


class JsonFormatter(logging.Formatter):
    _second = -1
    _second_text = ""

    def _ts(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once a second, not once a line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self._ts(record),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        if not record.name.startswith(LOGGER.name):
            out["logger"] = record.name
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


# The ledger's writer, expiry job and outbox relay log through "payswitch.ledger.*"
# (the ledger does not import the switch): the same handler makes them JSON lines too,
# instead of Python's plain-text last-resort output on stderr.
OTHER_LOGGERS = ("payswitch.ledger",)


def setup(level: str = "INFO", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for logger in (LOGGER, *map(logging.getLogger, OTHER_LOGGERS)):
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def _safe(key: str, value: Any) -> Any:
    if key == "pan":
        return mask_pan(value)
    if key in _SECRET_KEYS:
        return "<redacted>"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return value


_PLAIN = (str, int, float, bool, type(None))  # shown as they are, unless named secret
_NAMED = _SECRET_KEYS | {"pan"}


def log(event: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """One JSON line (once per request on the hot path: the record is made here, which
    skips logging's search of the stack for the caller, a line's largest cost)."""
    if LOGGER.isEnabledFor(level):
        for k, v in fields.items():
            if k in _NAMED or type(v) not in _PLAIN:
                fields[k] = _safe(k, v)
        LOGGER.handle(LOGGER.makeRecord(LOGGER.name, level, "", 0, event, (),
                                        sys.exc_info() if exc_info else None,
                                        extra={"fields": fields}))
