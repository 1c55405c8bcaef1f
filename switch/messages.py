"""Building ISO 8583 messages the switch answers or sends, and the keys it derives from
them. Pure functions: no I/O, no switch state."""

from __future__ import annotations

from typing import Any

from payswitch.codecs.iso8583.message import Message, copier
from payswitch.switch.journal import SafItem, safe_fields

# DE39 codes that approve, and so hold funds at the issuer: 00 approved, 08 honour
# with identification, 10 partial approval, 11 approved (VIP). Each needs reversing.
APPROVAL_CODES = frozenset({"00", "08", "10", "11"})
# A DUKPT terminal sends its KSN here, as 20 hex characters: DE53 is n16 in ISO
# 8583:1987 and cannot hold a 10-byte KSN. Private use, never forwarded to an issuer.
KSN_DE = 62


# What a response echoes of its request: the fields that identify the exchange (the
# MTI is then turned into the response's). Copied by a generated function: a Message
# built from 18 keyword arguments cost twice as much, once per authorization.
_echo = copier(("mti", "pan", "processing_code", "amount_minor", "transmission_time",
                "stan", "local_time", "local_date", "acquirer_id", "rrn", "terminal_id",
                "merchant_id", "currency", "network_code"))


def respond(req: Message, code: str, *, rrn: str | None = None, auth_code: str | None = None,
            additional_amounts: str | None = None, emv: bytes | None = None) -> Message:
    """The response to ``req``: its identifying fields echoed, the outcome added."""
    resp = _echo(req)
    resp.mti = req.response_mti
    if rrn:
        resp.rrn = rrn
    resp.auth_code = auth_code
    resp.response_code = code
    resp.additional_amounts = additional_amounts
    resp.emv = emv
    return resp


def replay(req: Message, stored: dict[str, Any]) -> Message:
    """The original's answer again, rebuilt from the journal: same fields, same bytes
    (bar DE55 issuer data, which is never stored)."""
    return respond(req, stored["response_code"], rrn=stored.get("rrn"),
                   auth_code=stored.get("auth_code"),
                   additional_amounts=stored.get("additional_amounts"))


def original_data(out: Message) -> str:
    """DE90: original MTI, STAN, DE7, acquiring and forwarding institution (11 each)."""
    return (out.mti + (out.stan or "0" * 6) + (out.transmission_time or "0" * 10)
            + (out.acquirer_id or "").zfill(11) + (out.forwarding_id or "").zfill(11))


def reversal_item(out: Message, link: str) -> SafItem:
    """A 0420 reversal advice for what the issuer may have seen (``out``).

    For an authorization or financial request, DE90 points at ``out`` itself; for an
    unconfirmed 0400, the 0420 repeats its DE90 (the original it reverses), so that a
    reversal is never itself reversed.
    """
    fields = safe_fields(out)
    for name in ("pan_masked", "auth_code", "response_code", "additional_amounts", "mti"):
        fields.pop(name, None)
    is_reversal = out.mti[:2] == "04" and out.original_data
    fields["original_data"] = out.original_data if is_reversal else original_data(out)
    return SafItem(link=link, mti="0420", message=fields)


def duplicate_key(source: str, req: Message) -> str:
    """(who, message class, STAN, DE7, amount): a repeat (0101) keys as its original."""
    return "|".join((source, req.mti[:3] + "0", req.stan or "", req.transmission_time or "",
                     str(req.amount_minor if req.amount_minor is not None else "")))


def pan_of(req: Message) -> str | None:
    """DE2, else the PAN in track 2 (DE35): the PAN a format 0 PIN block is bound to."""
    if req.pan:
        return req.pan
    if req.track2:
        pan = req.track2.replace("D", "=").split("=", 1)[0]
        return pan if pan.isdigit() else None
    return None
