"""ISO 8583:1987 data element types, for dialects that encode by type.

pyiso8583's specs say how a field is laid out, not what it holds; a BCD or EBCDIC
dialect needs to know which fields are numeric (``n``), which are binary (``b``),
which are track data (``z``), and which are text (everything else).
"""

from __future__ import annotations

# n: numeric digits. (DE 28-31, 46, 97 are x+n: a C/D sign then digits -> text.)
NUMERIC: frozenset[int] = frozenset(
    [*range(2, 28), 32, 33, 49, 50, 51, 53, 66, 67, 68, 69, 70, 71, 72, 73,
     *range(74, 91), 99, 100]
)
# z: track data, BCD with a hex 'D' separator on binary links.
TRACK: frozenset[int] = frozenset({35, 36})
# b: raw bytes (bitmaps, PIN block, ICC data, MACs).
BINARY: frozenset[int] = frozenset({1, 52, 55, 64, 65, 96, 128})
