"""ISO 8583 dialects over one canonical ``Message``.

``get(name)`` returns a dialect object with ``decode(bytes) -> Message`` and
``encode(Message) -> bytes``; both raise ``CodecError`` and nothing else.
"""

from __future__ import annotations

import functools
import importlib

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583.dialect import Dialect
from payswitch.codecs.iso8583.message import Message

DIALECTS = ("iso87ascii", "visa", "mastercard", "iso93ascii", "iso87binbitmap")
# Dialects that differ only in how the bitmap is written: a frame one of them cannot
# read may still show its MTI and STAN to the other (to answer it DE39 30).
BITMAP_TWINS = {"iso87ascii": "iso87binbitmap", "iso87binbitmap": "iso87ascii"}

__all__ = ["BITMAP_TWINS", "DIALECTS", "CodecError", "Dialect", "Message", "get"]


@functools.cache  # a listener asks once per connection: a junk flood is ~200 a second
def get(name: str) -> Dialect:
    if name not in DIALECTS:
        raise ValueError(f"unknown ISO 8583 dialect {name!r}; known: {', '.join(DIALECTS)}")
    return importlib.import_module(f"payswitch.codecs.iso8583.{name}").DIALECT
