"""build / parse / validate, and the pacs.002 rejection of a message that failed."""

from __future__ import annotations

import datetime as dt

from lxml import etree

from payswitch.codecs.iso20022 import builders, readers
from payswitch.codecs.iso20022 import model as m
from payswitch.codecs.iso20022.errors import Iso20022Error
from payswitch.codecs.iso20022.safexml import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    parse_untrusted,
)
from payswitch.codecs.iso20022.schemas import VERSIONS, SchemaStore, version_of

_TYPE_OF_VERSION = {v: k for k, v in VERSIONS.items()}
ADDTL_INF_LEN = 105  # Max105Text
ADDTL_INF_MAX = 4  # a reason fits in far fewer; the cap keeps a pacs.002 small


def to_element(msg: m.Message):
    builder = builders.BUILDERS.get(type(msg))
    if builder is None:
        raise TypeError(f"not an ISO 20022 model: {type(msg).__name__}")
    return builder(msg)


def build(msg: m.Message, store: SchemaStore, *, validate: bool = True) -> bytes:
    """The message as UTF-8 XML; validated against its XSD unless told otherwise.
    A model the XSD refuses, or one with a naive datetime or a negative amount, is an
    Iso20022Error."""
    try:
        root = to_element(msg)
    except ValueError as e:
        raise Iso20022Error(f"model: {e}", message_type=type(msg).__name__) from None
    if validate:
        store.validate(root, VERSIONS[m.MESSAGE_TYPES[type(msg)]])
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _msg_id(root) -> str | None:
    for path in ("{*}*/{*}GrpHdr/{*}MsgId", "{*}*/{*}Assgnmt/{*}Id"):
        e = root.find(path)
        if e is not None and e.text and len(e.text) <= 35:
            return e.text
    return None


def _load(data: bytes | str, store: SchemaStore, max_bytes: int, max_depth: int):
    root = parse_untrusted(data, max_bytes=max_bytes, max_depth=max_depth)
    version = version_of(root)
    if version not in _TYPE_OF_VERSION:
        raise Iso20022Error(f"message version {version} is not one payswitch reads",
                            path="/Document", message_type=version, msg_id=_msg_id(root))
    try:
        store.validate(root, version)
    except Iso20022Error as e:
        e.message_type, e.msg_id = version, _msg_id(root)
        raise
    return root, version


def validate(data: bytes | str, store: SchemaStore, *, max_bytes: int = DEFAULT_MAX_BYTES,
             max_depth: int = DEFAULT_MAX_DEPTH) -> str:
    """Safe parse + XSD validation only; returns the message version."""
    return _load(data, store, max_bytes, max_depth)[1]


def parse(data: bytes | str, store: SchemaStore, *, expect: str | None = None,
          max_bytes: int = DEFAULT_MAX_BYTES,
          max_depth: int = DEFAULT_MAX_DEPTH) -> m.Message:
    """Safe parse, XSD validation, then the model. Every failure is an Iso20022Error."""
    root, version = _load(data, store, max_bytes, max_depth)
    kind = _TYPE_OF_VERSION[version]
    if expect is not None and kind != expect:
        raise Iso20022Error(f"expected {expect}, got {kind}", path="/Document",
                            message_type=version, msg_id=_msg_id(root))
    try:
        return readers.PARSERS[kind](root)
    except Iso20022Error as e:
        e.message_type, e.msg_id = version, _msg_id(root)
        raise


def _chunks(text: str) -> tuple[str, ...]:
    parts = [text[i:i + ADDTL_INF_LEN] for i in range(0, len(text), ADDTL_INF_LEN)]
    return tuple(parts[:ADDTL_INF_MAX])


def rejection(error: Iso20022Error, *, msg_id: str, created: dt.datetime,
              code: str = "FF01", instructing_agent: str | None = None,
              instructed_agent: str | None = None) -> m.Pacs002:
    """A pacs.002 with group status RJCT answering the message that raised ``error``.

    FF01 is ISO's "invalid file format"; the additional information carries the
    path and the reason, never the offending value.
    """
    return m.Pacs002(
        msg_id=msg_id, created=created,
        original_msg_id=error.msg_id or "NOTPROVIDED",
        original_msg_name=(error.message_type or "UNKNOWN")[:35],
        group_status="RJCT",
        group_reason=m.Reason(code, _chunks(f"{error.path}: {error.reason}")),
        instructing_agent=instructing_agent, instructed_agent=instructed_agent)
