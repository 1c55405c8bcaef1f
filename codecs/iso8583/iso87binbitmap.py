"""ISO 8583:1987 with a binary bitmap and ASCII fields.

The default of iso8583sim and of the npm ``iso_8583`` package (and its forks): the MTI
and every field are ASCII text as in ``iso87ascii`` (binary fields such as the PIN
block as hex text), but the primary and secondary bitmaps are 8 raw bytes each
instead of 16 hex characters. Only the bitmaps differ from ``iso87ascii``; they are
taken from pyiso8583's own ``default`` spec (binary bitmaps, ASCII lengths).
"""

from __future__ import annotations

from iso8583.specs import default

from payswitch.codecs.iso8583.dialect import Dialect, spec_from
from payswitch.codecs.iso8583.iso87ascii import Iso87Ascii


class Iso87BinBitmap(Dialect):
    name = "iso87binbitmap"
    spec = spec_from(Iso87Ascii.spec, p=dict(default["p"]), **{"f1": dict(default["1"])})


DIALECT = Iso87BinBitmap()
