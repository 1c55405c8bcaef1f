"""Test cards with known outcomes, shared by the network simulators, load and certify.

The table is the contract between the terminal side (load, certify) and the issuer
side (the network simulators): a card's outcome is fixed, so a test can say "this PAN
is declined 51" without knowing anything else. Every PAN is Luhn-valid; Visa BINs
start with 4, Mastercard with 51-55 or 2221-2720. ``unrouted`` cards belong to no
network the demo routes (a Discover-like 6011 BIN): the switch answers 15 for them.

Outcomes:
  ``00`` approve, ``05`` do not honour, ``51`` insufficient funds (balance 0),
  ``54`` expired (expiry in the past; the simulator checks the date, not the label),
  ``55`` wrong PIN, ``75`` PIN tries exceeded, ``82`` CVV / iCVV / ARQC failure,
  ``N7`` CVV2 failure, ``14`` invalid card
  (a PAN the issuer has no record of), ``no_answer`` (the simulator never replies: the
  switch must time out), ``15`` (no such issuer: never reaches a simulator).

Card secrets. With HSMs (the demo, the e2e tests) the outcomes 55/75/82/N7 are not
labels but real failures: every card has a PIN (``pin``) whose PVV its issuer keeps,
and ``wrong`` says what the terminal gets wrong for it: the PIN it keys in
(``entered_pin``), the CVV it reads from track 2, the CVV2 it keys, or the ARQC the
chip computes. The terminal generator computes CVV/iCVV/CVV2 and ARQCs with the
issuer keys in its own token (standing in for card personalisation: a real terminal
reads them from the card, which the issuer personalised). Track 2 discretionary data
starts with the 3-digit CVV (iCVV on chip track 2 equivalent data).
Without HSMs the issuer falls back to the outcome labels.
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


def track2_with_cvv(pan: str, expiry: str, service_code: str, cvv: str,
                    pvv: str = "") -> str:
    """Track 2 whose discretionary data starts with the CVV (or iCVV), then PVKI 1 and
    the PVV when given (what a stand-in PIN check reads), padded with 0."""
    dd = cvv + ("1" + pvv if pvv else "")
    return track2(pan, expiry, service_code, (dd + "0" * 11)[:11])


def track2_cvv(data: str) -> str | None:
    """The 3-digit CVV at the start of track 2 discretionary data, if there is one."""
    sep = "=" if "=" in data else "D" if "D" in data else None
    if sep is None:
        return None
    rest = data.partition(sep)[2]
    cvv = rest[7:10]
    return cvv if len(cvv) == 3 and cvv.isdigit() else None


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
    wrong: str = ""  # what the terminal gets wrong: "", pin, cvv, cvv2, arqc
    pin_tries_max: int | None = 3  # wrong PINs in a row before 75; None = not counted
    cvn_: int = 0  # the chip's cryptogram version; 0: the network's default (see cvn)

    @property
    def entered_pin(self) -> str:
        """The PIN the cardholder keys in at the terminal."""
        return "9999" if self.wrong == "pin" else self.pin

    @property
    def network(self) -> str | None:
        return network_of(self.pan)

    @property
    def cvn(self) -> int:
        """The chip's cryptogram version (hsm/emv.py): Visa 18 (VIS 1.6) unless the card
        says 10; Mastercard M/Chip 16 unless it says 17."""
        if self.cvn_:
            return self.cvn_
        return 16 if self.network == "mastercard" else 18

    @property
    def expiry(self) -> str:
        return expiry_in(self.expiry_years)

    @property
    def track2(self) -> str:
        return track2(self.pan, self.expiry, self.service_code)


def _cards() -> tuple[Card, ...]:
    cards = []
    # A mix of cryptogram versions: Visa CVN 10 and 18, Mastercard CVN 16 and 17.
    for net, bin6, alt in (("visa", "476173", 10), ("mastercard", "541333", 17)):
        cards += [
            Card(f"{net}_approve", with_luhn(bin6 + "000000001"), "00", cvn_=alt),
            Card(f"{net}_approve_2", with_luhn(bin6 + "000000019"), "00"),
            Card(f"{net}_decline", with_luhn(bin6 + "000000050"), "05"),
            Card(f"{net}_insufficient_funds", with_luhn(bin6 + "000000051"), "51",
                 balance_minor=0),
            Card(f"{net}_expired", with_luhn(bin6 + "000000054"), "54", expiry_years=-1),
            # Every wrong PIN is 55: its issuer keeps no try counter for it, so the
            # demo keeps showing 55s (the pin_tries card shows the counter).
            Card(f"{net}_wrong_pin", with_luhn(bin6 + "000000055"), "55", wrong="pin",
                 pin_tries_max=None),
            Card(f"{net}_pin_tries", with_luhn(bin6 + "000000075"), "75", wrong="pin"),
            Card(f"{net}_bad_cvv", with_luhn(bin6 + "000000082"), "82", wrong="cvv"),
            Card(f"{net}_bad_cvv2", with_luhn(bin6 + "000000077"), "N7", wrong="cvv2"),
            Card(f"{net}_bad_arqc", with_luhn(bin6 + "000000083"), "82", wrong="arqc",
                 cvn_=alt),
            # Luhn-valid and in the issuer's BIN, but the issuer has no such account.
            Card(f"{net}_invalid_card", with_luhn(bin6 + "000000014"), "14"),
            Card(f"{net}_no_answer", with_luhn(bin6 + "000000091"), NO_ANSWER),
        ]
    cards.append(Card("mastercard_2series_approve", with_luhn("222100" + "000000001"), "00",
                      cvn_=17))
    cards.append(Card("unrouted", with_luhn("601100" + "000000001"), "15"))
    return tuple(cards)


CARDS: tuple[Card, ...] = _cards()
BY_NAME: dict[str, Card] = {c.name: c for c in CARDS}
BY_PAN: dict[str, Card] = {c.pan: c for c in CARDS}


def card(name: str) -> Card:
    return BY_NAME[name]


def cards_for(network: str | None) -> list[Card]:
    return [c for c in CARDS if c.network == network]
