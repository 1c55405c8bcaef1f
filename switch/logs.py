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
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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


def log(event: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    if LOGGER.isEnabledFor(level):
        safe = {k: _safe(k, v) for k, v in fields.items()}
        LOGGER.log(level, event, extra={"fields": safe}, exc_info=exc_info)
