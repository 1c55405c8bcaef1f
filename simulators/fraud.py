"""A cardholder population that injects labelled fraud: data for the risk model.

``simulate(seed=..)`` returns a ``Simulation``: authorizations as plain records
(``CardAuth``, the fields a switch sees in a 0100/0200: PAN, amount, MCC, merchant,
terminal, country, entry mode, processing code) sorted by time, and, in a separate
list, the label of each (``""`` for good traffic, else the fraud pattern). Labels stay
here: nothing in a ``CardAuth`` says whether it is fraud.

Good cardholders have a home city, usual merchants, an amount habit, a daily rhythm
and a channel mix. Some travel (days abroad, foreign ATMs), some buy in bursts (a
mall: 3-6 purchases in half an hour), some make small test-like purchases (app
stores, 0.99-2.99). That is the noise that makes single-threshold rules misfire.

Fraud patterns (each an incident of several authorizations):
  ``card_testing``  stolen PANs tried with small CNP amounts at one online merchant
  ``bin_attack``    enumerated PANs of one BIN at one online merchant
  ``stolen_spree``  a stolen card used in person in its own city for an hour or two
  ``cnp_takeover``  a taken-over account buying online at merchants new to it
  ``atm_cashout``   cloned cards emptied at many ATMs of one foreign city
  ``impossible_travel`` a cloned card used abroad minutes after a genuine home purchase
Fraud amounts come from the same per-MCC distributions as good traffic, merchants
from the same catalogue (with the resale bias real thieves have), hours from the
same daily rhythm where the real pattern would.

Pure and deterministic: the same arguments give the same records. No I/O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from payswitch.simulators.cards import with_luhn

PATTERNS = ("card_testing", "bin_attack", "stolen_spree", "cnp_takeover", "atm_cashout",
            "impossible_travel")
# share of fraudulent authorizations by pattern: testing and enumeration attacks are
# most of the attempts by count; takeover and sprees fewer, but larger
PATTERN_WEIGHTS = {"card_testing": 25, "bin_attack": 22, "stolen_spree": 14,
                   "cnp_takeover": 14, "atm_cashout": 15, "impossible_travel": 10}
DAY_MS = 86_400_000
MINUTE_MS = 60_000
EPOCH_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z: the first simulated day

# country numeric code -> (UTC offset hours, [(city lat, lon)])
COUNTRIES: dict[str, tuple[int, list[tuple[float, float]]]] = {
    "840": (-5, [(40.71, -74.0), (41.88, -87.63), (34.05, -118.24), (29.76, -95.37)]),
    "826": (0, [(51.51, -0.13), (53.48, -2.24)]),
    "250": (1, [(48.86, 2.35), (45.76, 4.84)]),
    "276": (1, [(52.52, 13.40), (48.14, 11.58)]),
    "724": (1, [(40.42, -3.70), (41.39, 2.17)]),
    "124": (-5, [(43.65, -79.38), (49.28, -123.12)]),
    "484": (-6, [(19.43, -99.13)]),
    "076": (-3, [(-23.55, -46.63)]),
    "356": (5, [(19.08, 72.88), (28.61, 77.21)]),
    "392": (9, [(35.68, 139.69)]),
    "566": (1, [(6.52, 3.38)]),
    "764": (7, [(13.76, 100.50)]),
}
HOME_WEIGHTS = {"840": 40, "826": 12, "250": 8, "276": 8, "724": 6, "124": 8, "484": 4,
                "076": 4, "356": 4, "392": 3, "566": 1, "764": 2}

# mcc -> (median amount in minor units, log-sigma, share of in-person purchases, weight)
MCCS: dict[str, tuple[int, float, float, int]] = {
    "5411": (4_500, 0.7, 0.95, 30),   # grocery
    "5541": (4_000, 0.5, 1.0, 12),    # fuel
    "5812": (3_500, 0.7, 0.9, 14),    # restaurants
    "5814": (1_200, 0.5, 0.9, 14),    # fast food
    "5651": (7_000, 0.8, 0.7, 7),     # clothing
    "5732": (18_000, 1.0, 0.6, 4),    # electronics
    "5944": (25_000, 1.0, 0.8, 1),    # jewelry
    "5999": (3_000, 1.0, 0.5, 8),     # misc retail
    "5815": (500, 0.8, 0.0, 5),       # digital goods (app stores): small amounts
    "4121": (2_000, 0.6, 0.8, 6),     # taxi / rides
    "4511": (40_000, 0.7, 0.0, 1),    # airlines
    "7011": (20_000, 0.6, 0.5, 1),    # hotels
    "5311": (6_000, 0.8, 0.7, 6),     # department stores
}
RESALE_MCCS = ("5732", "5944", "5651", "5311", "5999")
ATM_MCC = "6011"
ENTRY_CHIP, ENTRY_CONTACTLESS, ENTRY_FALLBACK, ENTRY_CNP, ENTRY_MAGSTRIPE = (
    "05", "07", "80", "81", "90")
PURCHASE, CASH = "000000", "010000"
BINS = ("476173", "411111", "453201", "492181", "541333", "552233", "222100", "518791",
        "400551", "535522")


@dataclass(frozen=True, slots=True)
class CardAuth:
    """One authorization as the switch would see it (no label, nothing the switch lacks)."""

    at_ms: int
    pan: str
    amount_minor: int
    currency: str
    mcc: str
    merchant_id: str
    terminal_id: str
    country: str
    lat: float | None  # terminal location; None when card-not-present
    lon: float | None
    pos_entry_mode: str  # DE22 first two digits
    processing_code: str  # DE3


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    mcc: str
    country: str
    lat: float | None
    lon: float | None
    terminals: tuple[str, ...]
    online: bool


@dataclass(slots=True)
class Cardholder:
    pan: str
    home: str
    city: tuple[float, float]
    usual: list[Merchant]
    scale: float  # amount habit: multiplies every MCC median
    rate: float  # purchases a day
    peak_hour: float  # local hour around which the card is used
    cnp_share: float
    contactless_share: float
    traveller: bool
    burster: bool
    small_buyer: bool
    trips: dict[int, tuple[str, tuple[float, float]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Simulation:
    auths: list[CardAuth]
    labels: list[str]  # parallel to auths: "" good, else a name from PATTERNS
    days: int

    def day_of(self, index: int) -> int:
        return (self.auths[index].at_ms - EPOCH_MS) // DAY_MS


def simulate(seed: int, cards: int = 4000, days: int = 6, fraud_rate: float = 0.01,
             patterns: Sequence[str] = PATTERNS) -> Simulation:
    """``days`` days of traffic from ``cards`` cardholders; about ``fraud_rate`` of the
    authorizations on each day are fraud, spread over ``patterns``. Day 0 has no fraud
    (it warms the switch's state up, as history would)."""
    if not 0 <= fraud_rate < 0.5:
        raise ValueError("fraud_rate must be in [0, 0.5)")
    unknown = set(patterns) - set(PATTERNS)
    if unknown:
        raise ValueError(f"unknown fraud patterns: {sorted(unknown)}")
    world = _World(random.Random(seed), cards)
    rows: list[tuple[CardAuth, str]] = []
    for day in range(days):
        good = world.good_day(day)
        rows += [(a, "") for a in good]
        if day > 0 and patterns and fraud_rate > 0:
            want = int(len(good) * fraud_rate / (1 - fraud_rate))
            rows += world.fraud_day(day, want, list(patterns))
            rows += [(a, "") for a in world.extra_good]
            world.extra_good.clear()
    rows.sort(key=lambda r: (r[0].at_ms, r[0].pan))
    return Simulation(auths=[r[0] for r in rows], labels=[r[1] for r in rows], days=days)


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.dist(a, b) * 111.0  # rough, plenty for placing terminals


class _World:
    def __init__(self, rng: random.Random, n_cards: int) -> None:
        self.rng = rng
        self.merchants_by_city: dict[tuple[str, int], list[Merchant]] = {}
        self.online: dict[str, list[Merchant]] = {}
        self.atms: dict[tuple[str, int], list[Merchant]] = {}
        self._build_merchants()
        self.cards = [self._cardholder(i) for i in range(n_cards)]
        self.extra_good: list[CardAuth] = []  # genuine purchases a fraud incident needs

    # --- catalogue -------------------------------------------------------------
    def _build_merchants(self) -> None:
        rng, n = self.rng, 0
        mccs = list(MCCS)
        weights = [MCCS[m][3] for m in mccs]
        for country, (_, cities) in COUNTRIES.items():
            for ci, (lat, lon) in enumerate(cities):
                shops = []
                for mcc in rng.choices(mccs, weights, k=120):
                    if MCCS[mcc][2] == 0.0:
                        continue
                    n += 1
                    plat, plon = lat + rng.gauss(0, 0.08), lon + rng.gauss(0, 0.08)
                    terms = tuple(f"T{n:06d}{k}" for k in range(rng.randint(1, 3)))
                    shops.append(Merchant(f"M{n:09d}", mcc, country, plat, plon, terms, False))
                self.merchants_by_city[(country, ci)] = shops
                atms = []
                for _ in range(25):
                    n += 1
                    atms.append(Merchant(f"A{n:09d}", ATM_MCC, country,
                                         lat + rng.gauss(0, 0.08), lon + rng.gauss(0, 0.08),
                                         (f"ATM{n:05d}",), False))
                self.atms[(country, ci)] = atms
            online = []
            for mcc in rng.choices(mccs, weights, k=60):
                if MCCS[mcc][2] == 1.0:
                    continue
                n += 1
                online.append(Merchant(f"E{n:09d}", mcc, country, None, None,
                                       (f"W{n:06d}",), True))
            self.online[country] = online

    def _cardholder(self, i: int) -> Cardholder:
        rng = self.rng
        home = rng.choices(list(HOME_WEIGHTS), list(HOME_WEIGHTS.values()))[0]
        ci = rng.randrange(len(COUNTRIES[home][1]))
        shops = self.merchants_by_city[(home, ci)]
        usual = rng.sample(shops, k=min(len(shops), rng.randint(6, 14)))
        usual += rng.sample(self.online[home], k=rng.randint(1, 4))
        pan = with_luhn(BINS[i % len(BINS)] + f"{i:09d}")
        return Cardholder(
            pan=pan, home=home, city=COUNTRIES[home][1][ci], usual=usual,
            scale=math.exp(rng.gauss(0, 0.45)), rate=rng.uniform(0.8, 5.0),
            peak_hour=rng.uniform(9, 20), cnp_share=rng.uniform(0.05, 0.4),
            contactless_share=rng.uniform(0.1, 0.7), traveller=rng.random() < 0.08,
            burster=rng.random() < 0.12, small_buyer=rng.random() < 0.08)

    # --- draws shared by good and fraud traffic ----------------------------------
    def amount(self, mcc: str, scale: float) -> int:
        median, sigma, _, _ = MCCS[mcc]
        return max(50, int(median * scale * math.exp(self.rng.gauss(0, sigma))))

    def hour_ms(self, day: int, peak: float, tz: int) -> int:
        local = (self.rng.gauss(peak, 3.5)) % 24
        return EPOCH_MS + day * DAY_MS + int(((local - tz) % 24) * 3_600_000)

    def entry(self, c: Cardholder, m: Merchant) -> str:
        if m.online:
            return ENTRY_CNP
        r = self.rng.random()
        if r < 0.015:
            return ENTRY_FALLBACK  # chips fail now and then for good cards too
        return ENTRY_CONTACTLESS if r < c.contactless_share else ENTRY_CHIP

    def auth(self, at_ms: int, pan: str, m: Merchant, amount: int, entry: str,
             cash: bool = False) -> CardAuth:
        return CardAuth(at_ms=at_ms, pan=pan, amount_minor=amount, currency="840",
                        mcc=m.mcc, merchant_id=m.merchant_id,
                        terminal_id=self.rng.choice(m.terminals), country=m.country,
                        lat=m.lat, lon=m.lon, pos_entry_mode=entry,
                        processing_code=CASH if cash else PURCHASE)

    def where(self, c: Cardholder, day: int) -> tuple[str, int]:
        """(country, city index) the cardholder is in that day."""
        trip = c.trips.get(day)
        if trip:
            return trip[0], COUNTRIES[trip[0]][1].index(trip[1])
        return c.home, COUNTRIES[c.home][1].index(c.city)

    # --- good traffic -----------------------------------------------------------
    def good_day(self, day: int) -> list[CardAuth]:
        out: list[CardAuth] = []
        for c in self.cards:
            if c.traveller and day not in c.trips and self.rng.random() < 0.15:
                dest = self.rng.choice([k for k in COUNTRIES if k != c.home])
                city = self.rng.choice(COUNTRIES[dest][1])
                for d in range(day, day + self.rng.randint(1, 3)):
                    c.trips[d] = (dest, city)
            out += self.card_day(c, day)
        return out

    def card_day(self, c: Cardholder, day: int) -> list[CardAuth]:
        rng = self.rng
        country, ci = self.where(c, day)
        tz = COUNTRIES[country][0]
        n = _poisson(rng, c.rate)
        out = []
        local = self.merchants_by_city[(country, ci)]
        for _ in range(n):
            at = self.hour_ms(day, c.peak_hour, tz)
            if rng.random() < c.cnp_share:
                m = self.online_merchant(c)
            elif country == c.home and rng.random() < 0.75:
                m = rng.choice([u for u in c.usual if not u.online])
            else:
                m = rng.choice(local)
            out.append(self.auth(at, c.pan, m, self.amount(m.mcc, c.scale), self.entry(c, m)))
        if rng.random() < (0.25 if country != c.home else 0.08):
            atm = rng.choice(self.atms[(country, ci)])
            amt = rng.choice((2_000, 4_000, 6_000, 10_000, 20_000, 30_000))
            out.append(self.auth(self.hour_ms(day, c.peak_hour, tz), c.pan, atm, amt,
                                 ENTRY_CHIP, cash=True))
        if c.burster and rng.random() < 0.3:
            out += self.burst(c, day, local, tz)
        if self.where(c, day - 1)[0] != country:
            out = self.after_landing(out, day)
        if c.small_buyer and rng.random() < 0.5:
            app = rng.choice([m for m in self.online[c.home] if m.mcc == "5815"]
                             or self.online[c.home])
            at = self.hour_ms(day, c.peak_hour, tz)
            for _k in range(rng.randint(2, 5)):
                at += rng.randint(1, 20) * MINUTE_MS
                out.append(self.auth(at, c.pan, app, rng.choice((99, 149, 199, 299)),
                                     ENTRY_CNP))
        return out

    def online_merchant(self, c: Cardholder) -> Merchant:
        """A usual web shop mostly; else any, at home mostly, sometimes abroad."""
        rng = self.rng
        if rng.random() < 0.7:
            return rng.choice([u for u in c.usual if u.online] or self.online[c.home])
        country = c.home if rng.random() < 0.85 else rng.choice(list(COUNTRIES))
        return rng.choice(self.online[country])

    def after_landing(self, auths: list[CardAuth], day: int) -> list[CardAuth]:
        """A day the cardholder flies (abroad or back): card-present use starts after
        landing, 16-24 h into the day (no airliner beats that from anywhere)."""
        landing = EPOCH_MS + day * DAY_MS + 16 * 3_600_000
        return [a if a.lat is None or a.at_ms >= landing else
                replace(a, at_ms=landing + self.rng.randrange(8 * 3_600_000)) for a in auths]

    def burst(self, c: Cardholder, day: int, local: list[Merchant], tz: int) -> list[CardAuth]:
        """A mall afternoon: several shops within the hour, many of them familiar."""
        rng = self.rng
        at = self.hour_ms(day, c.peak_hour, tz)
        out = []
        usual = [u for u in c.usual if not u.online and u.country == local[0].country]
        for _ in range(rng.randint(3, 7)):
            at += rng.randint(2, 15) * MINUTE_MS
            m = rng.choice(usual if usual and rng.random() < 0.6 else local)
            out.append(self.auth(at, c.pan, m, self.amount(m.mcc, c.scale * 1.3),
                                 self.entry(c, m)))
        return out

    # --- fraud ------------------------------------------------------------------
    def fraud_day(self, day: int, want: int, patterns: list[str]) -> list[tuple[CardAuth, str]]:
        out: list[tuple[CardAuth, str]] = []
        makers = {"card_testing": self.card_testing, "bin_attack": self.bin_attack,
                  "stolen_spree": self.stolen_spree, "cnp_takeover": self.cnp_takeover,
                  "atm_cashout": self.atm_cashout, "impossible_travel": self.impossible_travel}
        total = sum(PATTERN_WEIGHTS[p] for p in patterns)
        budget = {p: want * PATTERN_WEIGHTS[p] // total for p in patterns}
        for p in patterns:
            made = 0
            while made < budget[p]:
                rows = makers[p](day)[:budget[p] - made]  # the day's share, not more
                out += [(a, p) for a in rows]
                made += len(rows)
        return out

    def _day_ms(self, day: int) -> int:
        return EPOCH_MS + day * DAY_MS + self.rng.randrange(DAY_MS)

    def card_testing(self, day: int) -> list[CardAuth]:
        rng = self.rng
        country = rng.choice(list(COUNTRIES))
        m = rng.choice(self.online[country])
        at = self._day_ms(day)
        victims = rng.sample(self.cards, k=rng.randint(8, 30))
        out = []
        for v in victims:
            for _ in range(rng.choice((1, 1, 2))):
                at += rng.randint(2, 40) * 1000
                out.append(self.auth(at, v.pan, m, rng.choice((99, 100, 149, 199, 250, 300)),
                                     ENTRY_CNP))
        return out

    def bin_attack(self, day: int) -> list[CardAuth]:
        rng = self.rng
        bin6 = rng.choice(BINS)
        country = rng.choice(list(COUNTRIES))
        m = rng.choice(self.online[country])
        at = self._day_ms(day)
        base = rng.randrange(10**8)
        out = []
        for k in range(rng.randint(10, 40)):
            at += rng.randint(3, 40) * 1000
            pan = with_luhn(bin6 + f"9{(base + k) % 10**8:08d}")
            out.append(self.auth(at, pan, m, self.amount(m.mcc, 0.6), ENTRY_CNP))
        return out

    def stolen_spree(self, day: int) -> list[CardAuth]:
        rng = self.rng
        c = rng.choice(self.cards)
        country, ci = self.where(c, day)
        shops = self.merchants_by_city[(country, ci)]
        resale = [m for m in shops if m.mcc in RESALE_MCCS] or shops
        at = self.hour_ms(day, c.peak_hour, COUNTRIES[country][0])
        out = []
        for _ in range(rng.randint(4, 10)):
            at += rng.randint(2, 15) * MINUTE_MS
            m = rng.choice(resale if rng.random() < 0.85 else shops)
            entry = rng.choice((ENTRY_CONTACTLESS, ENTRY_CONTACTLESS, ENTRY_CHIP,
                                ENTRY_FALLBACK))
            # the most the card will buy before it is blocked: the dear end of each shop
            out.append(self.auth(at, c.pan, m, self.amount(m.mcc, c.scale * 4), entry))
        return out

    def cnp_takeover(self, day: int) -> list[CardAuth]:
        rng = self.rng
        c = rng.choice(self.cards)
        at = self._day_ms(day)  # the fraudster's hours, not the cardholder's
        usual = {u.merchant_id for u in c.usual}
        country = c.home if rng.random() < 0.6 else rng.choice(list(COUNTRIES))
        pool = [m for m in self.online[country] if m.merchant_id not in usual]
        resale = [m for m in pool if m.mcc in RESALE_MCCS] or pool
        out = []
        for _ in range(rng.randint(3, 7)):
            at += rng.randint(1, 20) * MINUTE_MS
            m = rng.choice(resale if rng.random() < 0.8 else pool)
            out.append(self.auth(at, c.pan, m, self.amount(m.mcc, c.scale * 4), ENTRY_CNP))
        return out

    def atm_cashout(self, day: int) -> list[CardAuth]:
        rng = self.rng
        country = rng.choice(list(COUNTRIES))
        ci = rng.randrange(len(COUNTRIES[country][1]))
        atms = self.atms[(country, ci)]
        victims = [c for c in rng.sample(self.cards, k=12) if c.home != country][:4]
        start = self._day_ms(day)
        out = []
        for c in victims:
            at = start + rng.randint(0, 20) * MINUTE_MS
            for atm in rng.sample(atms, k=rng.randint(2, 5)):
                at += rng.randint(2, 12) * MINUTE_MS
                amt = rng.choice((20_000, 30_000, 40_000, 50_000))
                entry = ENTRY_MAGSTRIPE if rng.random() < 0.6 else ENTRY_FALLBACK
                out.append(self.auth(at, c.pan, atm, amt, entry, cash=True))
        return out

    def impossible_travel(self, day: int) -> list[CardAuth]:
        """A genuine purchase at home (unlabelled, returned apart) then the clone abroad."""
        rng = self.rng
        c = rng.choice([c for c in self.cards if not c.trips.get(day)])
        country, ci = self.where(c, day)
        m = rng.choice([u for u in c.usual if not u.online])
        at = self.hour_ms(day, c.peak_hour, COUNTRIES[country][0])
        self.extra_good.append(self.auth(at, c.pan, m, self.amount(m.mcc, c.scale),
                                         self.entry(c, m)))
        far = [k for k in COUNTRIES if _km(COUNTRIES[k][1][0], c.city) > 2500]
        dest = rng.choice(far)
        di = rng.randrange(len(COUNTRIES[dest][1]))
        shops = self.merchants_by_city[(dest, di)]
        out = []
        at += rng.randint(10, 150) * MINUTE_MS
        for _ in range(rng.randint(1, 3)):
            at += rng.randint(5, 40) * MINUTE_MS
            m2 = rng.choice(shops)
            entry = ENTRY_MAGSTRIPE if rng.random() < 0.3 else self.entry(c, m2)
            out.append(self.auth(at, c.pan, m2, self.amount(m2.mcc, c.scale), entry))
        return out


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
