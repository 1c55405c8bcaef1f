"""BIN-prefix routing: which issuer network link a card goes to. No I/O.

The longest configured prefix of the PAN wins (``4`` for a whole brand, ``476173`` for
one issuer inside it). ``Router.route(msg)`` is the one interface the switch calls;
route scoring, failover and stand-in come later behind the same call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from payswitch.codecs.iso8583.message import Message


class RoutingError(Exception):
    """Base of the routing package's errors; the switch maps them to DE39."""


class UnknownBin(RoutingError):
    """No prefix of the PAN is in the table (DE39 15, no such issuer)."""


class NoPan(RoutingError):
    """The request carries neither DE2 nor a track 2 PAN to route on."""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    link: str  # name of the issuer network link
    prefix: str  # the table entry that matched, for logs and metrics


class Router(Protocol):
    def route(self, msg: Message) -> RouteDecision: ...


def pan_of(msg: Message) -> str | None:
    """DE2, or the PAN part of track 2 when DE2 is absent (swiped/chip reads)."""
    if msg.pan:
        return msg.pan
    if msg.track2:
        return msg.track2.split("=", 1)[0].split("D", 1)[0] or None
    return None


class BinTable:
    """Prefix -> link, longest prefix wins. Lookup cost: at most 19 dict probes."""

    MAX_PREFIX_DIGITS = 19

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self._by_prefix: dict[str, str] = {}
        for prefix, link in entries:
            if not prefix.isdigit() or not 1 <= len(prefix) <= self.MAX_PREFIX_DIGITS:
                raise ValueError(f"BIN prefix must be 1..19 digits, got {len(prefix)} chars")
            if prefix in self._by_prefix and self._by_prefix[prefix] != link:
                raise ValueError(f"BIN prefix {prefix} routed to two links")
            self._by_prefix[prefix] = link
        self._longest = max((len(p) for p in self._by_prefix), default=0)

    def lookup(self, pan: str) -> RouteDecision:
        for n in range(min(len(pan), self._longest), 0, -1):
            link = self._by_prefix.get(pan[:n])
            if link is not None:
                return RouteDecision(link=link, prefix=pan[:n])
        raise UnknownBin("no BIN prefix matches the card")

    def route(self, msg: Message) -> RouteDecision:
        pan = pan_of(msg)
        if not pan:
            raise NoPan("request carries no PAN")
        return self.lookup(pan)
