"""Test cards with known outcomes, shared by the network simulators, load and certify.

The table is the contract between the terminal side (load, certify) and the issuer
side (the network simulators): a card's outcome is fixed, so a test can say "this PAN
is declined 51" without knowing anything else. Every PAN is Luhn-valid; Visa BINs
start with 4, Mastercard with 51-55 or 2221-2720. ``unrouted`` cards belong to no
network the demo routes (a Discover-like 6011 BIN): the switch answers 15 for them.

Outcomes:
  ``00`` approve, ``05`` do not honour, ``51`` insufficient funds (balance 0),
  ``54`` expired (expiry in the past; the simulator checks the date, not the label),
  ``55`` wrong PIN (a fixed answer until the HSM verifies PINs), ``14`` invalid card
  (a PAN the issuer has no record of), ``no_answer`` (the simulator never replies: the
  switch must time out), ``15`` (no such issuer: never reaches a simulator).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from payswitch.codecs.pan import luhn_ok

NO_ANSWER = "no_answer"
NETWORKS = ("visa", "mastercard")


def luhn_digit(body: str) -> str:
    """The check digit that makes ``body + digit`` Luhn-valid."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # doubled: these become odd positions once the digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def with_luhn(body: str) -> str:
    pan = body + luhn_digit(body)
    assert luhn_ok(pan), pan
    return pan


def network_of(pan: str) -> str | None:
    """Card scheme by BIN range: what the demo's routing table also says."""
    if pan.startswith("4"):
        return "visa"
    p2, p4 = int(pan[:2]), int(pan[:4])
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return "mastercard"
    return None


def expiry_in(years: int, today: dt.date | None = None) -> str:
    """YYMM ``years`` from today (negative: in the past)."""
    today = today or dt.datetime.now(dt.UTC).date()
    return f"{(today.year + years) % 100:02d}{today.month:02d}"


def track2(pan: str, expiry: str, service_code: str = "201",
           discretionary: str = "00000000000") -> str:
    """ISO 7813 track 2 equivalent data as DE35 carries it: PAN=YYMM SVC DD."""
    data = f"{pan}={expiry}{service_code}{discretionary}"
    return data[:37]


def parse_track2(data: str) -> tuple[str, str, str] | None:
    """(pan, expiry YYMM, service code), or None when it is not track 2."""
    sep = "=" if "=" in data else "D" if "D" in data else None
    if sep is None:
        return None
    pan, _, rest = data.partition(sep)
    if not pan.isdigit() or len(rest) < 7 or not rest[:7].isdigit():
        return None
    return pan, rest[:4], rest[4:7]


@dataclass(frozen=True, slots=True)
class Card:
    name: str
    pan: str
    outcome: str  # "00", "05", "51", "54", "55", "14", "15" or NO_ANSWER
    expiry_years: int = 3  # relative to today, so the table never goes stale
    balance_minor: int = 10_000_000
    pin: str = "1234"
    service_code: str = "201"  # chip card

    @property
    def network(self) -> str | None:
        return network_of(self.pan)

    @property
    def expiry(self) -> str:
        return expiry_in(self.expiry_years)

    @property
    def track2(self) -> str:
        return track2(self.pan, self.expiry, self.service_code)


def _cards() -> tuple[Card, ...]:
    cards = []
    for net, bin6 in (("visa", "476173"), ("mastercard", "541333")):
        cards += [
            Card(f"{net}_approve", with_luhn(bin6 + "000000001"), "00"),
            Card(f"{net}_approve_2", with_luhn(bin6 + "000000019"), "00"),
            Card(f"{net}_decline", with_luhn(bin6 + "000000050"), "05"),
            Card(f"{net}_insufficient_funds", with_luhn(bin6 + "000000051"), "51",
                 balance_minor=0),
            Card(f"{net}_expired", with_luhn(bin6 + "000000054"), "54", expiry_years=-1),
            Card(f"{net}_wrong_pin", with_luhn(bin6 + "000000055"), "55"),
            # Luhn-valid and in the issuer's BIN, but the issuer has no such account.
            Card(f"{net}_invalid_card", with_luhn(bin6 + "000000014"), "14"),
            Card(f"{net}_no_answer", with_luhn(bin6 + "000000091"), NO_ANSWER),
        ]
    cards.append(Card("mastercard_2series_approve", with_luhn("222100" + "000000001"), "00"))
    cards.append(Card("unrouted", with_luhn("601100" + "000000001"), "15"))
    return tuple(cards)


CARDS: tuple[Card, ...] = _cards()
BY_NAME: dict[str, Card] = {c.name: c for c in CARDS}
BY_PAN: dict[str, Card] = {c.pan: c for c in CARDS}


def card(name: str) -> Card:
    return BY_NAME[name]


def cards_for(network: str | None) -> list[Card]:
    return [c for c in CARDS if c.network == network]
