"""ISO 8583:1993, ASCII, hex-ASCII bitmaps: converted to and from the 1987 canonical form.

What changes at the edge (1993 wire <-> canonical ``Message``):

- MTI: version digit 1 <-> 0. For the network-management, file and administrative
  classes (8, 3, 6) a 1993 request/response carries origin 4 ("other"):
  1804 <-> 0800, 1805 <-> 0801, 1814 <-> 0810 (likewise 13x4, 16x4). A 1993 MTI with
  no 1987 twin (e.g. 1800) and a canonical one with no 1993 twin (0804) are CodecErrors.
- DE39: 3-digit action code <-> 2-character response code (``ACTION_BY_RESPONSE``).
  "00" is sent as the class's approval: 000 (1xxx, 2xxx), 400 (reversals), 800
  (network management), 300/500/600/700 likewise. An action code that the table would
  not give back from its response code (907, 910, 123, 999...) is kept verbatim in
  ``Message.action_code`` and its ``response_code`` is the nearest 1987 meaning:
  ``ACTION_FALLBACK`` (907 -> 91) or, when unknown, by the first digit (0xx -> 00,
  1xx -> 05, 2xx -> 04, 9xx -> 96, x00 of classes 3-8 -> 00, else 06). On encode
  ``action_code`` wins only while it still means ``response_code``, so a stale one is
  never sent. A canonical response code 1993 has no code for (e.g. Visa "N7") is
  sent as 100 (do not honour).
- DE12 is YYMMDDhhmmss: canonical ``local_date`` (MMDD) + ``local_time`` (hhmmss) +
  ``local_year`` (YY). The codec has no clock, so all three are needed to encode.
- DE24 is the function code. For network management it carries what 1987 put in DE70:
  801 sign-on <-> 001, 802 sign-off <-> 002, 811 key change <-> 161, 831 echo <-> 301.
  Any other DE24 travels in ``other[24]``.
- 1993 DE13 (effective date), DE15 (YYMMDD), DE22 (an12 POS data code), DE25 (n4
  reason code), DE26 (n4 business code), DE53 (b..48), DE56 (original data) and DE70
  keep their 1993 meaning in ``other``. The canonical 1987 forms of those
  (``pos_entry_mode``, ``pos_condition``, ``settlement_date``, ``security_control``,
  ``original_data``) have no lossless 1993 form: encoding them is a CodecError, so the
  caller maps them on purpose instead of the codec guessing.
"""

from __future__ import annotations

import re
from typing import Any, cast

from iso8583.specs import default_ascii

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583.dialect import Dialect, spec_from
from payswitch.codecs.iso8583.message import Message

_A = {"data_enc": "ascii", "len_enc": "ascii"}
_DIGITS3 = re.compile(r"[0-9]{3}")

# canonical response code -> 1993 action code. One-to-one; "00" depends on the class.
ACTION_BY_RESPONSE: dict[str, str] = {
    "01": "107", "02": "108", "03": "109", "04": "200", "05": "100", "07": "207",
    "08": "001", "09": "923", "10": "002", "11": "003", "12": "902", "13": "110",
    "14": "111", "19": "903", "30": "904", "31": "905", "33": "201", "34": "202",
    "35": "203", "36": "204", "37": "205", "38": "206", "40": "115", "41": "208",
    "43": "209", "51": "116", "54": "101", "55": "117", "56": "118", "57": "119",
    "58": "120", "59": "102", "60": "103", "61": "121", "62": "104", "63": "122",
    "65": "123", "66": "105", "75": "106", "90": "906", "91": "911", "92": "908",
    "93": "124", "94": "913", "96": "909",
}
RESPONSE_BY_ACTION = {a: r for r, a in ACTION_BY_RESPONSE.items()}
# More 1993 codes that mean a 1987 code the table already sends another way.
ACTION_FALLBACK: dict[str, str] = {
    "004": "00", "005": "00", "006": "10", "007": "00", "900": "00", "901": "00",
    "907": "91", "910": "91", "912": "91", "126": "55", "129": "59", "210": "34",
}
UNMAPPED_RESPONSE_ACTION = "100"  # do not honour
_APPROVAL_BY_CLASS = {"0": "000", "1": "000", "2": "000", "3": "300", "4": "400",
                      "5": "500", "6": "600", "7": "700", "8": "800", "9": "000"}

# canonical DE70 network management code <-> 1993 DE24 function code
FUNCTION_BY_NETWORK = {"001": "801", "002": "802", "161": "811", "301": "831"}
NETWORK_BY_FUNCTION = {f: n for n, f in FUNCTION_BY_NETWORK.items()}

# 1993 fields whose meaning differs from the 1987 field of the same number: kept in other
_OTHER_93 = ("13", "15", "22", "25", "26", "53", "56", "70", "90")
# canonical 1987 fields with no lossless 1993 form here
_REFUSED = {"pos_entry_mode": "22", "pos_condition": "25", "settlement_date": "15",
            "security_control": "53", "original_data": "90"}
_ORIGIN_CLASSES = "368"  # classes whose 1993 requests/responses carry origin 4


def _convert_mti(mti: str, version: str, to: str, origins: dict[str, str]) -> str:
    """Swap the version digit; requests/responses of the origin classes also map their
    origin digit (1987 0/1 = 1993 4/5, acquirer / acquirer repeat)."""
    names = {"0": "ISO 8583:1987", "1": "ISO 8583:1993"}
    if len(mti) != 4 or not (mti.isascii() and mti.isdigit()) or mti[0] != version:
        raise CodecError(f"MTI is not an {names[version]} MTI")
    cls, fn, org = mti[1], mti[2], mti[3]
    if cls in _ORIGIN_CLASSES and fn in "01":
        if org not in origins:
            raise CodecError(f"MTI has no {names[to]} equivalent")
        org = origins[org]
    return to + cls + fn + org


def mti_to_1987(mti: str) -> str:
    return _convert_mti(mti, "1", "0", {"4": "0", "5": "1"})


def mti_to_1993(mti: str) -> str:
    return _convert_mti(mti, "0", "1", {"0": "4", "1": "5"})


def response_for_action(action: str, mti: str) -> str:
    """1993 action code -> canonical 2-character response code (``mti`` is 1987)."""
    if action == _APPROVAL_BY_CLASS[mti[1]]:
        return "00"
    rc = RESPONSE_BY_ACTION.get(action) or ACTION_FALLBACK.get(action)
    if rc is not None:
        return rc
    first = action[0]
    if first == "0":
        return "00"
    if first == "1":
        return "05"
    if first == "2":
        return "04"
    if first == "9":
        return "96"
    return "00" if action[1:] == "00" else "06"


def action_for_response(rc: str, mti: str) -> str:
    """Canonical response code -> 1993 action code (``mti`` is 1987)."""
    if rc == "00":
        return _APPROVAL_BY_CLASS[mti[1]]
    return ACTION_BY_RESPONSE.get(rc, UNMAPPED_RESPONSE_ACTION)


class Iso93Ascii(Dialect):
    name = "iso93ascii"
    spec = spec_from(
        default_ascii,
        f12={**_A, "len_type": 0, "max_len": 12, "desc": "Date and time, local (YYMMDDhhmmss)"},
        f13={**_A, "len_type": 0, "max_len": 4, "desc": "Date, effective (YYMM)"},
        f15={**_A, "len_type": 0, "max_len": 6, "desc": "Date, settlement (YYMMDD)"},
        f22={**_A, "len_type": 0, "max_len": 12, "desc": "POS data code"},
        f24={**_A, "len_type": 0, "max_len": 3, "desc": "Function code"},
        f25={**_A, "len_type": 0, "max_len": 4, "desc": "Message reason code"},
        f26={**_A, "len_type": 0, "max_len": 4, "desc": "Card acceptor business code"},
        f39={**_A, "len_type": 0, "max_len": 3, "desc": "Action code"},
        f43={**_A, "len_type": 2, "max_len": 99, "desc": "Card acceptor name/location"},
        f52={**_A, "len_type": 0, "max_len": 16, "desc": "PIN data (hex)"},
        f53={**_A, "len_type": 2, "max_len": 96, "desc": "Security related control (hex)"},
        f55={**_A, "len_type": 3, "max_len": 999, "desc": "ICC data (hex)"},
        f56={**_A, "len_type": 2, "max_len": 35, "desc": "Original data elements"},
    )
    compiled = False  # its from_fields / to_fields rename MTIs, DE12, DE24, DE39

    def _readable_mti(self, mti: str | None) -> str | None:
        try:
            return mti_to_1987(mti) if mti else None
        except CodecError:
            return None

    def from_fields(self, fields: dict[str, str]) -> Message:
        f = dict(fields)
        f["t"] = mti_to_1987(f.get("t", ""))
        mti = f["t"]
        extra = {k: f.pop(k) for k in _OTHER_93 if k in f}
        de12, de24, de39 = f.pop("12", None), f.pop("24", None), f.pop("39", None)
        msg = super().from_fields(f)
        for k, v in extra.items():
            msg.other[int(k)] = v
        if de12 is not None:
            if not (de12.isascii() and de12.isdigit()):
                raise CodecError("DE12 is not 12 digits", field="12")
            msg.local_year, msg.local_date, msg.local_time = de12[:2], de12[2:6], de12[6:]
        if de24 is not None:
            if mti[1] == "8" and de24 in NETWORK_BY_FUNCTION:
                msg.network_code = NETWORK_BY_FUNCTION[de24]
            else:
                msg.other[24] = de24
        if de39 is not None:
            if not _DIGITS3.fullmatch(de39):
                raise CodecError("DE39 action code is not 3 digits", field="39")
            msg.response_code = response_for_action(de39, mti)
            if action_for_response(msg.response_code, mti) != de39:
                msg.action_code = de39
        return msg

    def to_fields(self, msg: Message) -> dict[str, str]:
        def refuse(reason: str, field: str) -> CodecError:
            return CodecError(reason, mti=msg.mti, stan=msg.stan, field=field)

        for name, de in _REFUSED.items():
            if getattr(msg, name) is not None:
                raise refuse(f"{name} has no ISO 8583:1993 form; map it to DE{de} first", de)
        for computed in (12, 39):
            if computed in msg.other:
                raise refuse("other[] may not carry a field the dialect computes",
                             str(computed))
        try:
            mti93 = mti_to_1993(msg.mti)
        except CodecError as e:
            raise refuse(e.reason, "t") from None
        base = msg.replace(local_time=None, local_date=None, response_code=None,
                           network_code=None)
        fields: dict[str, Any] = super().to_fields(base)
        fields["t"] = mti93
        dt = (msg.local_year, msg.local_date, msg.local_time)
        if any(v is not None for v in dt):
            if any(v is None for v in dt):
                raise refuse("1993 DE12 needs local_year, local_date and local_time", "12")
            fields["12"] = "".join(cast(tuple[str, str, str], dt))
        if msg.network_code is not None:
            function = FUNCTION_BY_NETWORK.get(msg.network_code)
            if msg.mti[1] != "8" or function is None:
                raise refuse("network code has no 1993 function code here", "24")
            if 24 in msg.other:
                raise refuse("both network_code and other[24] are set", "24")
            fields["24"] = function
        if msg.response_code is not None:
            rc = msg.response_code
            ac = msg.action_code
            if ac is not None and _DIGITS3.fullmatch(ac) and \
                    response_for_action(ac, msg.mti) == rc:
                fields["39"] = ac
            else:
                fields["39"] = action_for_response(rc, msg.mti)
        return fields


DIALECT = Iso93Ascii()
