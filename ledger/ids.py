"""Time-ordered 128-bit ids (UUIDv7 layout): 48-bit ms timestamp, version, random bits."""

from __future__ import annotations

import os
import time
import uuid


def new_id() -> int:
    """A fresh id as an int (0 < id < 2**128), sortable by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return value


def to_uuid(i: int) -> uuid.UUID:
    return uuid.UUID(int=i)
