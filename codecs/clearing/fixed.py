"""Fixed-width record layouts: a table of (name, start, length, kind) per record type.

``kind`` is ``"n"`` (digits, right-justified, zero-filled), ``"a"`` (text,
left-justified, blank-filled) or ``"c"`` (a constant the layout fixes, checked on
read). Positions are 1-based as the networks' manuals print them; ``Layout`` checks
at import time that the fields tile the record exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from payswitch.codecs.clearing.errors import ClearingError


@dataclass(frozen=True)
class Fld:
    name: str
    start: int  # 1-based
    length: int
    kind: str = "a"  # "n", "a", or "c" (constant: ``value``)
    value: str = ""


class Layout:
    def __init__(self, title: str, size: int, fields: list[Fld]) -> None:
        pos = 1
        for f in fields:
            assert f.start == pos, f"{title}: {f.name} starts at {f.start}, not {pos}"
            assert f.kind != "c" or len(f.value) == f.length, f"{title}: {f.name}"
            pos += f.length
        assert pos == size + 1, f"{title}: fields cover {pos - 1} of {size} positions"
        self.title, self.size, self.fields = title, size, fields

    def encode(self, values: dict[str, object], record: int) -> str:
        out = []
        for f in self.fields:
            if f.kind == "c":
                out.append(f.value)
                continue
            v = values.get(f.name, "")
            if f.kind == "n":
                s = f"{v:0{f.length}d}" if isinstance(v, int) else str(v).rjust(f.length, "0")
            else:
                s = str(v).ljust(f.length)
            if len(s) != f.length:
                raise ClearingError(f"{self.title} {f.name} does not fit {f.length} positions",
                                    record=record, field=f.name)
            out.append(s)
        return "".join(out)

    def decode(self, text: str, record: int) -> dict[str, str]:
        """Field strings: text fields right-trimmed, digits checked, constants checked."""
        values: dict[str, str] = {}
        for f in self.fields:
            s = text[f.start - 1:f.start - 1 + f.length]
            if f.kind == "c":
                if s != f.value:
                    raise ClearingError(f"{self.title} {f.name} is not the layout's constant",
                                        record=record, field=f.name)
                continue
            if f.kind == "n" and not (s.isascii() and s.isdigit()):
                raise ClearingError(f"{self.title} {f.name} is not digits", record=record,
                                    field=f.name)
            values[f.name] = s.rstrip(" ") if f.kind == "a" else s
        return values
