"""The rules a case is judged by: pure functions, no sockets, no clock, no HSM.

Each check returns the rules it finds broken as ``Violation(rule, field, expected,
got)``; an empty list is a pass. Crypto (MAC, ARPC) is asked of a ``Crypto`` passed
in (the runners give an HSM-backed one; tests a fake). Values shown in a violation
never hold a clear PAN (``mask_pan``) or secret data (PIN block, track, DE55 bytes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from payswitch.codecs.iso8583 import Message
from payswitch.codecs.pan import luhn_ok, mask_pan
from payswitch.codecs.tlv import decode_tlv


@dataclass(frozen=True)
class Violation:
    rule: str
    field: str
    expected: str
    got: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.field} expected {self.expected}, got {self.got}"


class Crypto(Protocol):
    def mac_ok(self, payload: bytes, msg: Message) -> bool: ...

    def arpc_ok(self, request: Message, response: Message) -> bool: ...


# Fields the network checks come back unchanged (issuer-host).
ECHOED = ((2, "pan"), (3, "processing_code"), (4, "amount_minor"),
          (7, "transmission_time"), (11, "stan"), (32, "acquirer_id"), (37, "rrn"),
          (41, "terminal_id"))
ECHOED_NETWORK = ((7, "transmission_time"), (11, "stan"), (70, "network_code"))
APPROVED = {"00", "08", "10", "11"}


def shown(de: int, value) -> str:
    """A field's value as a report may show it."""
    if value is None:
        return "absent"
    if de == 2:
        return mask_pan(value)
    if de in (35, 52, 55, 64, 128) or isinstance(value, bytes):
        return f"<{len(value)} bytes>" if isinstance(value, bytes) else "<redacted>"
    return str(value)


@dataclass
class Exchange:
    """What one issuer-host case sent and got back."""

    request: Message
    response: Message | None
    latency_ms: float
    response_payload: bytes = b""
    second: Message | None = None  # send_twice: the answer to the same request again
    mac: bool = False  # the link is MACed


def _codes(expect: Iterable[str]) -> str:
    return "/".join(sorted(expect)) or "any"


def response_mti(ex: Exchange, expect: tuple[str, ...], limit_ms: int, crypto) -> list:
    want = ex.request.response_mti
    if ex.response.mti != want:
        return [Violation("response_mti", "MTI", want, ex.response.mti)]
    return []


def de39_allowed(ex: Exchange, expect, limit_ms, crypto) -> list:
    got = ex.response.response_code
    if expect and got not in expect:
        return [Violation("de39_allowed", "DE39", _codes(expect), shown(39, got))]
    return []


def de38_on_approval(ex: Exchange, expect, limit_ms, crypto) -> list:
    r = ex.response
    if ex.request.mti not in FIN:  # advices, reversals, network management: no DE38
        return []
    if r.response_code in APPROVED and not (r.auth_code and r.auth_code.strip()):
        return [Violation("de38_on_approval", "DE38", "an authorization code on an "
                          f"approval (DE39 {r.response_code})", "absent")]
    return []


def echoed_fields(ex: Exchange, expect, limit_ms, crypto) -> list:
    out = []
    pairs = ECHOED_NETWORK if ex.request.mti.startswith("08") else ECHOED
    for de, name in pairs:
        sent = getattr(ex.request, name)
        if sent is None:
            continue
        got = getattr(ex.response, name)
        if got != sent:
            out.append(Violation("echoed_fields", f"DE{de}", shown(de, sent), shown(de, got)))
    return out


def time_limit(ex: Exchange, expect, limit_ms, crypto) -> list:
    if ex.latency_ms > limit_ms:
        return [Violation("time_limit", "response time", f"<= {limit_ms} ms",
                          f"{ex.latency_ms:.0f} ms")]
    return []


def duplicate_same(ex: Exchange, expect, limit_ms, crypto) -> list:
    if ex.second is None:
        return [Violation("duplicate_same", "response", "an answer to the duplicate",
                          "none")]
    out = []
    for de, name in ((39, "response_code"), (38, "auth_code")):
        a, b = getattr(ex.response, name), getattr(ex.second, name)
        if a != b:
            out.append(Violation("duplicate_same", f"DE{de}", f"{shown(de, a)} "
                                 "(as the first answer)", shown(de, b)))
    return out


def _arqc_sent(msg: Message) -> bool:
    if not msg.emv:
        return False
    try:
        return any(t.tag_hex == "9F26" for t in decode_tlv(msg.emv))
    except Exception:  # noqa: BLE001 (a malformed DE55 we sent ourselves: no ARPC asked)
        return False


def arpc(ex: Exchange, expect, limit_ms, crypto) -> list:
    r = ex.response
    if r.response_code not in APPROVED or not _arqc_sent(ex.request):
        return []
    tags = {}
    if r.emv:
        try:
            tags = {t.tag_hex: t.value for t in decode_tlv(r.emv)}
        except Exception:  # noqa: BLE001 (the host's bytes: reported, not raised)
            return [Violation("arpc", "DE55", "BER-TLV with tag 91", "undecodable")]
    if "91" not in tags:
        return [Violation("arpc", "DE55.91", "an ARPC on a chip approval", "absent")]
    if crypto is None or not crypto.arpc_ok(ex.request, r):
        return [Violation("arpc", "DE55.91", "ARPC method 1 over the ARQC and DE39",
                          "a value that does not verify")]
    return []


def mac(ex: Exchange, expect, limit_ms, crypto) -> list:
    if not ex.mac:
        return []
    if ex.response.mac is None:
        return [Violation("mac", "DE64/DE128", "a MAC under the link's ZAK", "absent")]
    if crypto is None or not crypto.mac_ok(ex.response_payload, ex.response):
        return [Violation("mac", "DE64/DE128", "a MAC under the link's ZAK",
                          "a MAC that does not verify")]
    return []


ISSUER_CHECKS: dict[str, Callable[..., list]] = {
    "response_mti": response_mti, "de39_allowed": de39_allowed,
    "de38_on_approval": de38_on_approval, "echoed_fields": echoed_fields,
    "time_limit": time_limit, "duplicate_same": duplicate_same, "arpc": arpc, "mac": mac,
}


def judge_exchange(ex: Exchange, checks: Iterable[str], expect: tuple[str, ...],
                   limit_ms: int, crypto: Crypto | None = None) -> list[Violation]:
    """Every broken rule of one issuer-host exchange (no answer is one violation)."""
    if ex.response is None:
        return [Violation("answered", "response", f"an answer within {limit_ms} ms",
                          "none")]
    out: list[Violation] = []
    for name in checks:
        out += ISSUER_CHECKS[name](ex, expect, limit_ms, crypto)
    return out


# -- acquirer-host: what the host sends to the network -----------------------------

FIN = {"0100", "0101", "0200", "0201"}
REVERSAL = {"0400", "0401", "0420", "0421"}
NETWORK = {"0800", "0801"}

# DE -> canonical name: mandatory per MTI class (M) and per processing code (extra).
MANDATORY = {
    "fin": ((3, "processing_code"), (4, "amount_minor"), (7, "transmission_time"),
            (11, "stan"), (22, "pos_entry_mode"), (32, "acquirer_id"), (37, "rrn"),
            (41, "terminal_id"), (49, "currency")),
    "reversal": ((3, "processing_code"), (4, "amount_minor"), (7, "transmission_time"),
                 (11, "stan"), (32, "acquirer_id"), (49, "currency"),
                 (90, "original_data")),
    "network": ((7, "transmission_time"), (11, "stan"), (70, "network_code")),
}
FORMATS = {
    3: re.compile(r"\d{6}"), 7: re.compile(r"(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])"
                                           r"([01]\d|2[0-3])[0-5]\d[0-5]\d"),
    11: re.compile(r"\d{6}"), 12: re.compile(r"([01]\d|2[0-3])[0-5]\d[0-5]\d"),
    13: re.compile(r"(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])"), 14: re.compile(r"\d{4}"),
    22: re.compile(r"\d{3}"), 32: re.compile(r"\d{1,11}"), 37: re.compile(r"[ -~]{12}"),
    41: re.compile(r"[ -~]{8}"), 42: re.compile(r"[ -~]{15}"), 49: re.compile(r"\d{3}"),
    70: re.compile(r"\d{3}"), 90: re.compile(r"\d{42}"),
}
NAMES = {2: "pan", 3: "processing_code", 7: "transmission_time", 11: "stan",
         12: "local_time", 13: "local_date", 14: "expiry", 22: "pos_entry_mode",
         32: "acquirer_id", 37: "rrn", 41: "terminal_id", 42: "merchant_id",
         49: "currency", 70: "network_code", 90: "original_data"}


def msg_class(msg: Message) -> str | None:
    if msg.mti in FIN:
        return "fin"
    if msg.mti in REVERSAL:
        return "reversal"
    if msg.mti in NETWORK:
        return "network"
    return None


def mandatory_fields(msg: Message) -> list[Violation]:
    cls = msg_class(msg)
    if cls is None:
        return []
    out = [Violation("mandatory_fields", f"DE{de}", f"present in {msg.mti}", "absent")
           for de, name in MANDATORY[cls] if getattr(msg, name) in (None, "")]
    if cls in ("fin", "reversal") and not msg.pan and not msg.track2:
        out.append(Violation("mandatory_fields", "DE2/DE35", f"a PAN in {msg.mti}",
                             "absent"))
    pc = msg.processing_code or ""
    if cls == "fin" and pc[:2] in ("01", "31") and msg.pin_block is None \
            and not (msg.pos_entry_mode or "").startswith("01"):
        out.append(Violation("mandatory_fields", "DE52", f"a PIN block for processing "
                             f"code {pc} (card present)", "absent"))
    if cls == "fin" and (msg.pos_entry_mode or "").startswith("05"):
        if msg.emv is None:
            out.append(Violation("mandatory_fields", "DE55", "chip data for entry mode "
                                 f"{msg.pos_entry_mode}", "absent"))
        if msg.card_sequence is None:
            out.append(Violation("mandatory_fields", "DE23", "card sequence number for "
                                 f"entry mode {msg.pos_entry_mode}", "absent"))
    return out


def field_formats(msg: Message) -> list[Violation]:
    out = []
    for de, rx in FORMATS.items():
        v = getattr(msg, NAMES[de])
        if v is not None and not rx.fullmatch(str(v)):
            out.append(Violation("field_formats", f"DE{de}", f"/{rx.pattern}/", shown(de, v)))
    if msg.pan is not None and not (12 <= len(msg.pan) <= 19 and msg.pan.isdigit()
                                    and luhn_ok(msg.pan)):
        out.append(Violation("field_formats", "DE2", "12-19 digits, Luhn-valid",
                             shown(2, msg.pan)))
    if msg.amount_minor is not None and msg.amount_minor < 0:
        out.append(Violation("field_formats", "DE4", ">= 0", str(msg.amount_minor)))
    return out


def original_data_of(orig: Message) -> str:
    """DE90 as a reversal of ``orig`` must carry it: MTI, STAN, DE7, DE32, DE33."""
    return (orig.mti + (orig.stan or "0" * 6) + (orig.transmission_time or "0" * 10)
            + (orig.acquirer_id or "").zfill(11) + (orig.forwarding_id or "").zfill(11))


def reversal_de90(rev: Message, orig: Message) -> list[Violation]:
    want = original_data_of(orig)
    got = rev.original_data
    if got is None:
        return [Violation("reversal_de90", "DE90", want, "absent")]
    if got[:20] != want[:20]:  # MTI, STAN, DE7 of the original: what identifies it
        return [Violation("reversal_de90", "DE90", want, got)]
    return []


def reversal_amount(rev: Message, orig: Message) -> list[Violation]:
    if rev.amount_minor != orig.amount_minor:
        return [Violation("reversal_amount", "DE4", f"{orig.amount_minor} (the original's)",
                          shown(4, rev.amount_minor))]
    return []


def unique_ids(messages: Iterable[Message]) -> list[Violation]:
    """STAN unique among the host's requests on a link; RRN among its originals."""
    out, stans, rrns = [], {}, {}
    for m in messages:
        if not m.is_request or m.mti.endswith("1"):  # a repeat reuses its original's ids
            continue
        if m.stan in stans:
            out.append(Violation("stan_rrn_unique", "DE11", f"a STAN not used before "
                                 f"(used by {stans[m.stan]})", f"{m.stan} in {m.mti}"))
        stans[m.stan] = m.mti
        if m.mti in FIN and m.rrn:
            if m.rrn in rrns:
                out.append(Violation("stan_rrn_unique", "DE37", "an RRN not used before",
                                     f"{m.rrn} in {m.mti}"))
            rrns[m.rrn] = m.mti
    return out


@dataclass
class Seen:
    """One message the host sent to the network (acquirer-host)."""

    msg: Message
    payload: bytes
    at_s: float  # monotonic receive time
    mac_ok: bool | None = None  # None: the link is not MACed
    answered: bool = False
    extra: dict = field(default_factory=dict)


def mac_seen(seen: Seen) -> list[Violation]:
    if seen.mac_ok is None or seen.mac_ok:
        return []
    got = "absent" if seen.msg.mac is None else "a MAC that does not verify"
    return [Violation("mac", f"DE64/DE128 of {seen.msg.mti} STAN {seen.msg.stan}",
                      "a MAC under the link's ZAK", got)]
