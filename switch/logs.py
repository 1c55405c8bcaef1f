"""Structured JSON logs, one object per line on stderr. PANs are masked here too.

``log(event, **fields)``: the event name is the message; values named ``pan`` are
masked, values named as secrets redacted, bytes shown as their length, and a
``Message`` (any dataclass) rendered through its own masking ``repr``, never field by
field (orjson would write a dataclass's fields as they are: the PAN, track 2, the PIN
block).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

import orjson

from payswitch.codecs.pan import mask_pan

LOGGER = logging.getLogger("payswitch.switch")
_SECRET_KEYS = frozenset({"track2", "pin_block", "emv", "cvv"})


def _shown(value: Any) -> str:
    """A value JSON has no type for: bytes as their length, anything else (a Message:
    its masking repr) as its str."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return str(value)


# dataclasses to _shown, not serialized field by field
_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS


def _encode(out: dict[str, Any]) -> str:
    """The JSON text of a line: orjson (a tenth of json's cost, once per request), UTF-8
    as is; json for what orjson refuses (an integer past 64 bits)."""
    try:
        return orjson.dumps(out, default=_shown, option=_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(out, default=_shown, separators=(",", ":"), ensure_ascii=False)


_LEVEL_NAMES = {n: logging.getLevelName(n).lower() for n in range(0, 60)}


class _Clock:
    """The ISO 8601 time of a line, strftime'd once a second, not once a line."""

    second = -1
    text = ""

    def ts(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self.second:
            self.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.second = second
        return f"{self.text}.{int(msecs):03d}Z"

    def now(self) -> str:
        """``ts`` of the current time (log's direct lines): the second's text and the
        millisecond's from a table, joined, not formatted."""
        now = time.time()
        second = int(now)
        if second != self.second:
            self.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.second = second
        return self.text + _MILLIS[int((now - second) * 1000)]


# a fraction just under 1 can round to 1000.0 ms: that is still .999 of its second
_MILLIS = (*(f".{ms:03d}Z" for ms in range(1000)), ".999Z")


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self._clock.ts(record.created, record.msecs),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        if not record.name.startswith(LOGGER.name):
            out["logger"] = record.name
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _encode(out)


class JsonHandler(logging.StreamHandler):
    """setup()'s handler. While it is the switch logger's only one, ``log`` writes
    its lines itself (the same JSON, under the same lock): a LogRecord, logging's
    handler chain and the formatter's generic parts were two thirds of a line's cost,
    and there is one line per request."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self.clock = _Clock()


# The ledger's writer, expiry job and outbox relay log through "payswitch.ledger.*"
# (the ledger does not import the switch): the same handler makes them JSON lines too,
# instead of Python's plain-text last-resort output on stderr.
OTHER_LOGGERS = ("payswitch.ledger",)


def setup(level: str = "INFO", stream: TextIO | None = None) -> None:
    handler = JsonHandler(stream or sys.stderr)
    for logger in (LOGGER, *map(logging.getLogger, OTHER_LOGGERS)):
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def _safe(key: str, value: Any) -> Any:
    """A field named ``pan`` masked, one named as a secret redacted (other values are
    made safe by ``_shown`` when encoded)."""
    if key == "pan":
        return mask_pan(value)
    return "<redacted>"


_NAMED = _SECRET_KEYS | {"pan"}


def log(event: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """One JSON line (once per request on the hot path: written directly by setup()'s
    handler when it is the only one; else the record is made here, which skips
    logging's search of the stack for the caller)."""
    if not LOGGER.isEnabledFor(level):
        return
    if not _NAMED.isdisjoint(fields):  # one set operation, not a test per field
        for k in _NAMED.intersection(fields):
            fields[k] = _safe(k, fields[k])
    handlers = LOGGER.handlers
    if not exc_info and len(handlers) == 1 and type(h := handlers[0]) is JsonHandler \
            and h.level <= level and not LOGGER.filters and not LOGGER.disabled \
            and not LOGGER.propagate:  # else the ancestors' handlers must see it too
        h.acquire()  # the ledger's threads log through this handler too
        try:
            line = _encode({"ts": h.clock.now(), "level": _LEVEL_NAMES.get(level) or
                            str(level), "event": event, **fields})
            h.stream.write(line + "\n")
            h.stream.flush()
        finally:
            h.release()
        return
    LOGGER.handle(LOGGER.makeRecord(LOGGER.name, level, "", 0, event, (),
                                    sys.exc_info() if exc_info else None,
                                    extra={"fields": fields}))
