"""ISO 20022 messages on a framed byte stream, and build/parse that tolerate a
schema directory without some XSDs.

Frames: a 4-byte big-endian length, then one UTF-8 XML document. A length above
``max_frame_bytes`` (or zero) is a ``FramingError``: the stream cannot be trusted
after it and the caller drops the link. Sans-I/O: ``FrameBuffer.feed`` takes any
chunking of the stream and returns whole documents.

``Codec`` validates every message it builds or reads against its XSD. No package we
found bundles the official pacs.028 (and a fresh machine's cache lacks the pacs.002,
pacs.004 and camt.056 XSDs), so with ``require_schemas=False`` a message whose XSD is
missing is built and read by the model alone and its version is recorded in
``unvalidated``: the demo reports it. Tests run with the full schema folder.
"""

from __future__ import annotations

import datetime as dt
import struct

from payswitch.codecs.errors import FramingError
from payswitch.codecs.iso20022 import api, readers
from payswitch.codecs.iso20022 import model as m
from payswitch.codecs.iso20022.errors import Iso20022Error
from payswitch.codecs.iso20022.safexml import parse_untrusted
from payswitch.codecs.iso20022.schemas import VERSIONS, SchemaStore, version_of

HEADER_BYTES = 4
DEFAULT_MAX_FRAME_BYTES = 1 << 20


def encode(document: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    if not 0 < len(document) <= max_frame_bytes:
        raise FramingError(f"document of {len(document)} bytes does not fit a frame")
    return struct.pack(">I", len(document)) + document


class FrameBuffer:
    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER_BYTES:
            (n,) = struct.unpack(">I", self._buf[:HEADER_BYTES])
            if not 0 < n <= self.max_frame_bytes:
                raise FramingError(f"frame length {n} outside 1..{self.max_frame_bytes}")
            if len(self._buf) < HEADER_BYTES + n:
                break
            out.append(bytes(self._buf[HEADER_BYTES:HEADER_BYTES + n]))
            del self._buf[:HEADER_BYTES + n]
        return out


_KIND = {v: k for k, v in VERSIONS.items()}


class Codec:
    """build/parse through one SchemaStore; see the module docstring for the fallback."""

    def __init__(self, store: SchemaStore, *, require_schemas: bool = True) -> None:
        self.store = store
        self.require_schemas = require_schemas
        self.unvalidated: set[str] = set()

    def _checked(self, version: str) -> bool:
        if self.store.has(version) or self.require_schemas:
            return True
        self.unvalidated.add(version)
        return False

    def build(self, msg: m.Message) -> bytes:
        version = VERSIONS[m.MESSAGE_TYPES[type(msg)]]
        return api.build(msg, self.store, validate=self._checked(version))

    def parse(self, data: bytes, expect: str | None = None) -> m.Message:
        root = parse_untrusted(data)
        version = version_of(root)
        if version in _KIND and self._checked(version):
            return api.parse(data, self.store, expect=expect)
        kind = _KIND.get(version)
        if kind is None or (expect is not None and kind != expect):
            raise Iso20022Error(f"message version {version} is not expected here",
                                path="/Document", message_type=version)
        try:
            return readers.PARSERS[kind](root)
        except Iso20022Error as e:
            e.message_type = version
            raise

    def reject(self, error: Iso20022Error, msg_id: str, created: dt.datetime) -> bytes:
        return self.build(api.rejection(error, msg_id=msg_id, created=created))
