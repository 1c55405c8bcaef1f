"""ISO 8583:1987, all ASCII: hex-ASCII bitmaps, ASCII lengths, binary fields as hex.

The dialect POS/ATM terminals and host links speak. pyiso8583's ``default_ascii`` spec
is the base; DE55 gets room for a full EMV data set (LLL, up to 999 hex characters).
"""

from __future__ import annotations

from iso8583.specs import default_ascii

from payswitch.codecs.iso8583.dialect import Dialect, spec_from

_HEX = {"data_enc": "ascii", "len_enc": "ascii"}


class Iso87Ascii(Dialect):
    name = "iso87ascii"
    spec = spec_from(
        default_ascii,
        f52={**_HEX, "len_type": 0, "max_len": 16, "desc": "PIN block (hex)"},
        f55={**_HEX, "len_type": 3, "max_len": 999, "desc": "ICC data (hex)"},
    )


DIALECT = Iso87Ascii()
