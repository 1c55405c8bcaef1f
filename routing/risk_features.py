"""Risk features from the state the switch keeps: per card, merchant and terminal.

``RiskState.features(auth)`` reads the state *before* the authorization and returns a
fixed-order tuple of floats (``FEATURES`` names them); ``RiskState.observe(auth)``
then adds the authorization. Training and serving both call exactly these two, so a
model never sees a feature computed another way.

No I/O and no wall clock: the time is ``AuthInput.at_ms``, the caller's clock (the
switch's UTC receive time, or the simulator's). Everything is bounded by ``Limits``:
a card keeps at most ``events_per_card`` events of the last 24 h, the state at most
``max_cards`` cards (least recently seen evicted first), and likewise for merchants
and terminals. Eviction loses history, never correctness of what is kept.

Cost: a card, merchant or terminal with few events is scanned (<= ``HOT`` events);
a busy one keeps running windows (``_CardWindows``, ``_PlaceWindows``) that give the
same floats, so a read is O(1) amortized however busy it is (see "running windows").
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Protocol

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
SMALL_AMOUNT_MINOR = 300  # "probe" amounts: card testers try 0.99-3.00
EARTH_KM = 6371.0
# electronics, jewelry, department stores, clothing, misc retail: what stolen cards buy
RESALE_MCCS = frozenset({"5732", "5944", "5311", "5651", "5999", "5945", "5094"})
FAST_KMH = 1000.0  # faster than an airliner: the card cannot be in both places

# DE22 positions 1-2 -> entry mode code (the model's categorical value)
ENTRY_MODES = {"05": 1, "07": 2, "80": 3, "90": 4, "81": 5, "01": 5, "10": 5}
ENTRY_NAMES = {0: "other", 1: "chip", 2: "contactless", 3: "fallback", 4: "magstripe",
               5: "card_not_present"}
CNP, FALLBACK, MAGSTRIPE = 5, 3, 4

FEATURES = (
    "amount_log", "mcc", "entry_mode", "is_cash", "hour_utc",
    "card_n_1m", "card_n_1h", "card_n_24h", "card_amount_log_1h", "card_amount_log_24h",
    "card_merchants_1h", "card_merchants_24h", "card_countries_24h", "card_terminals_1h",
    "card_small_1h", "card_cnp_1h", "card_cash_1h", "card_magstripe_24h", "card_fast_24h",
    "card_new_merchants_1h", "card_z_sum_1h", "card_resale_1h",
    "card_history_n", "amount_z", "spend_1h_vs_habit", "merchant_known", "country_share",
    "hour_gap", "secs_since_prev", "km_from_prev", "kmh_from_prev",
    "merchant_n_1m", "merchant_n_1h", "merchant_cards_1h", "merchant_small_1h",
    "merchant_bin_cards_1h", "merchant_new_cards_1h",
    "terminal_n_1h", "terminal_cards_1h",
)
CATEGORICAL = ("mcc", "entry_mode")
NAN = float("nan")


@dataclass(frozen=True, slots=True)
class AuthInput:
    """What one authorization request tells the risk scorer (the switch fills it from
    the message: token of the PAN, its BIN, DE4, DE18, DE42, DE41, DE19/DE43, DE22, DE3)."""

    at_ms: int  # the caller's clock, ms since the epoch (UTC)
    card_token: str  # never the PAN
    bin6: str
    amount_minor: int
    mcc: str
    merchant_id: str
    terminal_id: str
    country: str
    lat: float | None  # terminal location when known; None for card-not-present
    lon: float | None
    entry_mode: int  # a value of ENTRY_MODES (entry_mode_of)
    is_cash: bool


def entry_mode_of(de22: str | None) -> int:
    """DE22 (POS entry mode) -> entry mode code; unknown values are 0 (``other``)."""
    return ENTRY_MODES.get((de22 or "")[:2], 0)


@dataclass(frozen=True, slots=True)
class Limits:
    max_cards: int = 200_000
    max_merchants: int = 50_000
    max_terminals: int = 100_000
    events_per_card: int = 128  # of the last 24 h
    events_per_merchant: int = 512  # of the last hour
    events_per_terminal: int = 256  # of the last hour
    usual_merchants: int = 16  # per card, most recent first
    usual_countries: int = 8

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 1:
                raise ValueError(f"risk limit {name} must be >= 1")


@dataclass(slots=True)
class CardState:
    # (at_ms, amount_minor, merchant_id, country, terminal_id, small, cnp, cash, magstripe,
    #  fast: reached from the previous located authorization faster than FAST_KMH,
    #  new: a merchant the card had not used lately, z: how far above its habit, >= 0,
    #  resale: at a merchant whose goods thieves resell, RESALE_MCCS)
    events: deque = field(default_factory=deque)
    n: int = 0  # authorizations ever seen (capped counts are enough for the model)
    log_mean: float = 0.0  # mean / variance of log(amount): exact for the first 200,
    log_var: float = 0.0  # then an EWMA with weight 1/200 (habits drift)
    hour_sin: float = 0.0  # EWMA of the hour on the unit circle: the card's daily rhythm
    hour_cos: float = 0.0
    merchants: OrderedDict = field(default_factory=OrderedDict)  # merchant_id -> None
    countries: dict = field(default_factory=dict)  # country -> count
    last_at_ms: int | None = None
    last_loc_at_ms: int | None = None  # the last authorization with a terminal location
    last_lat: float | None = None
    last_lon: float | None = None
    inv: int = 0  # adjacent pairs of ``events`` out of time order (0: sorted)
    win: _CardWindows | None = None  # running windows over ``events``; None: scan them


@dataclass(slots=True)
class PlaceState:
    """A merchant's or terminal's last hour: (at_ms, card_token, bin6, small, new_card)."""

    events: deque = field(default_factory=deque)
    inv: int = 0
    win: _PlaceWindows | None = None


# --- running windows ------------------------------------------------------------
# A card with HOT or more events (the demo's test cards, a merchant taking hundreds an
# hour) would have every window rescanned on every read: ~900 events a request for one
# busy merchant, a terminal and a card (about 150 µs of the ~200 µs a scored request
# cost). Such an entity keeps running windows instead: deques of references to its
# events within 1 min, 1 h (and 24 h for a card) of the last read, with counts, sums
# and per-key counters (distinct merchants, countries, terminals, cards, cards per BIN)
# that events entering and leaving keep up to date: O(1) per request amortized, plus
# the keys a request brings or expires. The memory is bounded by the events kept
# (``Limits.events_per_*``): each window holds at most those references and each
# counter at most that many keys.
#
# The windows give exactly what the scan gives (tests compare the two on random
# streams). A card's only while its events are in time order: then each window is a
# suffix of the events, entered at the end and left from the front; an authorization
# observed out of order (``inv``) drops them and the card is scanned, as before, until
# the inversion has left its events. Its z_1h is a float sum: kept as the scan adds it
# (in event order, from 0.0) and summed again from its window when a non-zero term
# leaves. A merchant's or terminal's windows hold only counts, so they keep their events
# in time order (a late one goes in at its place) and survive the late DE7s of a busy
# merchant. Either way a read older than the last read, or than an event the windows
# hold, is scanned.
HOT = 8  # events before an entity keeps running windows: below it the scan is cheaper


def _inc(counter: dict, key: Any) -> None:
    counter[key] = counter.get(key, 0) + 1


def _dec(counter: dict, key: Any) -> None:
    n = counter[key] - 1
    if n:
        counter[key] = n
    else:
        del counter[key]


class _CardWindows:
    """A card's events in its last minute, hour and day, with what the features count."""

    __slots__ = ("now", "d1m", "d1h", "d24", "amt24", "mag24", "fast24", "merch24",
                 "countries24", "amt1h", "small1h", "cnp1h", "cash1h", "new1h", "resale1h",
                 "merch1h", "terms1h", "z1h", "zdirty")

    def __init__(self, events: deque, now: int) -> None:
        self.now = now
        self.d1m: deque = deque()
        self.d1h: deque = deque()
        self.d24: deque = deque()
        self.amt24 = self.mag24 = self.fast24 = 0
        self.merch24: dict = {}
        self.countries24: dict = {}
        self.amt1h = self.small1h = self.cnp1h = self.cash1h = self.new1h = self.resale1h = 0
        self.merch1h: dict = {}
        self.terms1h: dict = {}
        self.z1h, self.zdirty = 0.0, False
        for e in events:
            self.add(e)
        self.advance(now)

    def add(self, e: tuple) -> None:
        self.d24.append(e)
        self.amt24 += e[1]
        _inc(self.merch24, e[2])
        _inc(self.countries24, e[3])
        self.mag24 += e[8]
        self.fast24 += e[9]
        self.d1h.append(e)
        self.amt1h += e[1]
        _inc(self.merch1h, e[2])
        _inc(self.terms1h, e[4])
        self.small1h += e[5]
        self.cnp1h += e[6]
        self.cash1h += e[7]
        self.new1h += e[10]
        self.z1h += e[11]
        self.resale1h += e[12]
        self.d1m.append(e)

    def _left_24h(self) -> None:
        e = self.d24.popleft()
        self.amt24 -= e[1]
        _dec(self.merch24, e[2])
        _dec(self.countries24, e[3])
        self.mag24 -= e[8]
        self.fast24 -= e[9]

    def _left_1h(self) -> None:
        e = self.d1h.popleft()
        self.amt1h -= e[1]
        _dec(self.merch1h, e[2])
        _dec(self.terms1h, e[4])
        self.small1h -= e[5]
        self.cnp1h -= e[6]
        self.cash1h -= e[7]
        self.new1h -= e[10]
        self.resale1h -= e[12]
        if e[11] != 0.0:
            self.zdirty = True

    def advance(self, now: int) -> None:
        """Let go of what is no longer within each window at ``now`` (>= self.now)."""
        self.now = now
        d = self.d1m
        while d and d[0][0] <= now - MINUTE_MS:
            d.popleft()
        d = self.d1h
        while d and d[0][0] <= now - HOUR_MS:
            self._left_1h()
        d = self.d24
        while d and d[0][0] <= now - DAY_MS:
            self._left_24h()
        if self.zdirty:
            z = 0.0
            for e in self.d1h:
                z += e[11]
            self.z1h, self.zdirty = z, False

    def drop(self, e: tuple) -> bool:
        """``e`` left the card's events from the front (trimmed): out of every window."""
        if self.d1m and self.d1m[0] is e:
            self.d1m.popleft()
        if self.d1h and self.d1h[0] is e:
            self._left_1h()
        if self.d24 and self.d24[0] is e:
            self._left_24h()
        return True


class _PlaceWindows:
    """A merchant's or terminal's events in its last minute and hour, each window kept
    in time order (an event observed late goes in at its place), so that, unlike a
    card's, they survive authorizations out of order: every figure they give is a
    count, the same whatever the order (a card's z_1h is a float sum in event order)."""

    __slots__ = ("now", "d1m", "d1h", "cards", "small", "new", "bins")

    def __init__(self, events: deque, now: int) -> None:
        self.now = now
        self.d1m: deque = deque()
        self.d1h: deque = deque()
        self.cards: dict = {}  # card_token -> events in the hour
        self.bins: dict = {}  # bin6 -> {card_token -> events in the hour}
        self.small = self.new = 0
        for e in events:
            self.add(e)

    def add(self, e: tuple) -> None:
        """A new event, unless the last read already put it out of a window (then no
        read the windows answer would count it)."""
        at = e[0]
        if at <= self.now - HOUR_MS:
            return
        _put(self.d1h, e)
        _inc(self.cards, e[1])
        b = self.bins.get(e[2])
        if b is None:
            b = self.bins[e[2]] = {}
        _inc(b, e[1])
        self.small += e[3]
        self.new += e[4]
        if at > self.now - MINUTE_MS:
            _put(self.d1m, e)

    def _left_1h(self, e: tuple) -> None:
        _dec(self.cards, e[1])
        b = self.bins[e[2]]
        _dec(b, e[1])
        if not b:
            del self.bins[e[2]]
        self.small -= e[3]
        self.new -= e[4]

    def advance(self, now: int) -> None:
        self.now = now
        d = self.d1m
        while d and d[0][0] <= now - MINUTE_MS:
            d.popleft()
        d = self.d1h
        while d and d[0][0] <= now - HOUR_MS:
            self._left_1h(d.popleft())

    def drop(self, e: tuple) -> bool:
        """``e`` left the place's events (trimmed): out of the windows it is in."""
        if e[0] > self.now - MINUTE_MS and not _take(self.d1m, e):
            return False
        if e[0] > self.now - HOUR_MS:
            if not _take(self.d1h, e):
                return False
            self._left_1h(e)
        return True

    def newest(self) -> int | None:
        return self.d1h[-1][0] if self.d1h else None


def _at(e: tuple) -> int:
    return e[0]


def _put(d: deque, e: tuple) -> None:
    """Append ``e`` to a deque in time order, after the events of its time."""
    if not d or d[-1][0] <= e[0]:
        d.append(e)
    else:
        d.insert(bisect_right(d, e[0], key=_at), e)


def _take(d: deque, e: tuple) -> bool:
    """Remove ``e`` (this very tuple) from a deque in time order; False if it is not
    there (it always is: the caller then drops the windows rather than trust them)."""
    if d and d[0] is e:
        d.popleft()
        return True
    i = bisect_left(d, e[0], key=_at)
    while i < len(d) and d[i][0] == e[0]:
        if d[i] is e:
            del d[i]
            return True
        i += 1
    return False


def _place_windows(place: PlaceState, now: int) -> _PlaceWindows | None:
    """The place's running windows advanced to ``now``, or None: scan its events."""
    win = place.win
    if win is None:
        events = place.events
        if len(events) < HOT or now < max(e[0] for e in events):
            return None
        win = place.win = _PlaceWindows(events, now)
        return win
    newest = win.newest()
    if now < win.now or (newest is not None and now < newest):
        return None  # a read older than the last one, or than an event it would count
    win.advance(now)
    return win


def _windows(entity: CardState, now: int, make: Callable) -> Any:
    """The card's running windows advanced to ``now``, or None: scan its events."""
    win, events = entity.win, entity.events
    if entity.inv or (events and now < events[-1][0]):
        return None  # out of order, or a read older than the newest event
    if win is None:
        if len(events) < HOT:
            return None
        win = entity.win = make(events, now)
        return win
    if now < win.now:
        return None  # a read older than the last one: the windows are past it
    win.advance(now)
    return win


def _append(entity: CardState | PlaceState, e: tuple) -> None:
    events = entity.events
    if events and e[0] < events[-1][0]:
        entity.inv += 1
        if isinstance(entity, CardState):
            entity.win = None  # rebuilt once the events are in order again
    events.append(e)
    if entity.win is not None:
        entity.win.add(e)


def _trim_entity(entity: CardState | PlaceState, oldest_ms: int, cap: int) -> None:
    """Drop events older than ``oldest_ms`` from the front, and past ``cap``; keeps
    ``inv`` and the running windows in step."""
    events, win = entity.events, entity.win
    while events and (events[0][0] < oldest_ms or len(events) > cap):
        e = events.popleft()
        if events and e[0] > events[0][0]:
            entity.inv -= 1
        if win is not None and not win.drop(e):
            entity.win = win = None  # cannot happen; if it did, scan rather than guess


def _inversions(events: deque) -> int:
    return sum(1 for a, b in pairwise(events) if a[0] > b[0])


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def _travel(card: CardState, a: AuthInput) -> tuple[float, float]:
    """(km, km/h) from the card's last located authorization; NaN when either lacks one."""
    if (a.lat is None or a.lon is None or card.last_loc_at_ms is None
            or card.last_lat is None or card.last_lon is None):
        return NAN, NAN
    km = _km(card.last_lat, card.last_lon, a.lat, a.lon)
    hours = max((a.at_ms - card.last_loc_at_ms) / HOUR_MS, 1 / 60)  # a minute at least
    return km, km / hours


def _touch(table: OrderedDict, key: str, limit: int, make: Callable[[], Any]) -> Any:
    """Get or create ``table[key]`` as most recently used; evict the oldest past limit."""
    item = table.get(key)
    if item is None:
        item = table[key] = make()
        while len(table) > limit:
            table.popitem(last=False)
    else:
        table.move_to_end(key)
    return item


class RiskState:
    """Per card, merchant and terminal windows; see the module docstring."""

    def __init__(self, limits: Limits | None = None, windows: bool = True) -> None:
        self.limits = limits or Limits()
        # running windows for busy cards and places (see HOT); False: always scan, as
        # the tests' reference does
        self.windows = windows
        self.cards: OrderedDict[str, CardState] = OrderedDict()
        self.merchants: OrderedDict[str, PlaceState] = OrderedDict()
        self.terminals: OrderedDict[str, PlaceState] = OrderedDict()
        # (auth, the card's last located time then, (km, km/h)): features(a) computed it
        self._travel: tuple = (None, None, (NAN, NAN))

    # --- read ------------------------------------------------------------------
    def features(self, a: AuthInput) -> tuple[float, ...]:
        now = a.at_ms
        card = self.cards.get(a.card_token)
        amount_log = math.log1p(a.amount_minor)
        hour = (now % DAY_MS) / HOUR_MS
        small = a.amount_minor <= SMALL_AMOUNT_MINOR
        head = (amount_log, float(int(a.mcc) if a.mcc.isdigit() else -1), float(a.entry_mode),
                float(a.is_cash), hour)
        return head + self._card_part(card, a, now, amount_log, hour) + \
            self._place_part(self.merchants.get(a.merchant_id), a, now, small, True) + \
            self._place_part(self.terminals.get(a.terminal_id), a, now, small, False)

    def _card_part(self, card: CardState | None, a: AuthInput, now: int, amount_log: float,
                   hour: float) -> tuple[float, ...]:
        if card is None:
            return (0.0,) * 17 + (0.0, NAN, NAN, 0.0, NAN, NAN, NAN, NAN, NAN)
        w = _windows(card, now, _CardWindows) if self.windows else None
        if w is not None:
            head: tuple[float, ...] = (
                float(len(w.d1m)), float(len(w.d1h)), float(len(w.d24)),
                math.log1p(w.amt1h), math.log1p(w.amt24), float(len(w.merch1h)),
                float(len(w.merch24)), float(len(w.countries24)), float(len(w.terms1h)),
                float(w.small1h), float(w.cnp1h), float(w.cash1h), float(w.mag24),
                float(w.fast24), float(w.new1h), w.z1h, float(w.resale1h))
            amt_1h = w.amt1h
        else:
            head, amt_1h = self._card_scan(card, now)
        var = card.log_var
        z = (amount_log - card.log_mean) / math.sqrt(var + 0.05) if card.n > 1 else NAN
        # the last hour's spend against what one purchase of this card usually is
        spend = math.log1p(amt_1h + a.amount_minor) - card.log_mean if card.n > 1 else NAN
        total = sum(card.countries.values())
        share = card.countries.get(a.country, 0) / total if total else NAN
        mean_hour = (math.atan2(card.hour_sin, card.hour_cos) / (2 * math.pi) * 24) % 24
        gap = abs(hour - mean_hour)
        secs = NAN if card.last_at_ms is None else max(0.0, (now - card.last_at_ms) / 1000)
        km, kmh = _travel(card, a)
        self._travel = (a, card.last_loc_at_ms, (km, kmh))  # observe(a) reuses it
        return head + (float(min(card.n, 1000)), z, spend,
                       float(a.merchant_id in card.merchants), share, min(gap, 24 - gap),
                       secs, km, kmh)

    @staticmethod
    def _card_scan(card: CardState, now: int) -> tuple[tuple[float, ...], int]:
        """The card's window features by one pass over its events, and amt_1h."""
        n_1m = n_1h = n_24h = 0
        amt_1h = amt_24h = 0
        merch_1h: set = set()
        merch_24h: set = set()
        countries: set = set()
        terms_1h: set = set()
        small_1h = cnp_1h = cash_1h = mag_24h = fast_24h = new_1h = resale_1h = 0
        z_1h = 0.0
        for at, amt, merch, country, term, sm, cnp, cash, mag, fast, new, zp, rs in card.events:
            age = now - at
            if age < 0 or age >= DAY_MS:
                continue
            n_24h += 1
            amt_24h += amt
            merch_24h.add(merch)
            countries.add(country)
            mag_24h += mag
            fast_24h += fast
            if age < HOUR_MS:
                n_1h += 1
                amt_1h += amt
                merch_1h.add(merch)
                terms_1h.add(term)
                small_1h += sm
                cnp_1h += cnp
                cash_1h += cash
                new_1h += new
                resale_1h += rs
                z_1h += zp
                if age < MINUTE_MS:
                    n_1m += 1
        return (float(n_1m), float(n_1h), float(n_24h), math.log1p(amt_1h),
                math.log1p(amt_24h), float(len(merch_1h)), float(len(merch_24h)),
                float(len(countries)), float(len(terms_1h)), float(small_1h), float(cnp_1h),
                float(cash_1h), float(mag_24h), float(fast_24h), float(new_1h), z_1h,
                float(resale_1h)), amt_1h

    def _place_part(self, place: PlaceState | None, a: AuthInput, now: int, small: bool,
                    merchant: bool) -> tuple[float, ...]:
        w = _place_windows(place, now) if self.windows and place is not None else None
        if w is not None:
            if merchant:
                bins = w.bins.get(a.bin6)
                return (float(len(w.d1m)), float(len(w.d1h)), float(len(w.cards)),
                        float(w.small), float(len(bins) if bins else 0), float(w.new))
            return (float(len(w.d1h)), float(len(w.cards)))
        n_1m = n_1h = small_1h = new_1h = 0
        cards: set = set()
        bin_cards: set = set()
        if place is not None:
            for at, token, bin6, sm, new in place.events:
                age = now - at
                if age < 0 or age >= HOUR_MS:
                    continue
                n_1h += 1
                cards.add(token)
                small_1h += sm
                new_1h += new
                if bin6 == a.bin6:
                    bin_cards.add(token)
                if age < MINUTE_MS:
                    n_1m += 1
        if merchant:
            return (float(n_1m), float(n_1h), float(len(cards)), float(small_1h),
                    float(len(bin_cards)), float(new_1h))
        return (float(n_1h), float(len(cards)))

    # --- write -----------------------------------------------------------------
    def observe(self, a: AuthInput) -> None:
        lim, now = self.limits, a.at_ms
        card = _touch(self.cards, a.card_token, lim.max_cards, CardState)
        new_card = card.n == 0
        small = a.amount_minor <= SMALL_AMOUNT_MINOR
        seen, loc_at, travel = self._travel
        if seen is not a or loc_at != card.last_loc_at_ms:
            travel = _travel(card, a)
        fast = int(travel[1] > FAST_KMH)  # NaN compares False
        new_merchant = int(card.n > 0 and a.merchant_id not in card.merchants)
        x = math.log1p(a.amount_minor)
        z_pos = max(0.0, (x - card.log_mean) / math.sqrt(card.log_var + 0.05)) if card.n > 1 \
            else 0.0
        _append(card, (now, a.amount_minor, a.merchant_id, a.country, a.terminal_id,
                       int(small), int(a.entry_mode == CNP), int(a.is_cash),
                       int(a.entry_mode in (FALLBACK, MAGSTRIPE)), fast, new_merchant,
                       z_pos, int(a.mcc in RESALE_MCCS)))
        _trim_entity(card, now - DAY_MS + 1, lim.events_per_card)
        card.n += 1
        weight = 1 / min(card.n, 200)  # a plain mean at first, then a slow EWMA
        delta = x - card.log_mean
        card.log_mean += delta * weight
        card.log_var = (1 - weight) * (card.log_var + weight * delta * delta)
        angle = 2 * math.pi * (now % DAY_MS) / DAY_MS
        card.hour_sin += (math.sin(angle) - card.hour_sin) * max(weight, 0.05)
        card.hour_cos += (math.cos(angle) - card.hour_cos) * max(weight, 0.05)
        card.merchants[a.merchant_id] = None
        card.merchants.move_to_end(a.merchant_id)
        while len(card.merchants) > lim.usual_merchants:
            card.merchants.popitem(last=False)
        card.countries[a.country] = card.countries.get(a.country, 0) + 1
        if len(card.countries) > lim.usual_countries:
            del card.countries[min(card.countries, key=card.countries.__getitem__)]
        card.last_at_ms = now
        if a.lat is not None:
            card.last_loc_at_ms, card.last_lat, card.last_lon = now, a.lat, a.lon
        row = (now, a.card_token, a.bin6, int(small), int(new_card))
        for table, key, limit, cap in (
                (self.merchants, a.merchant_id, lim.max_merchants, lim.events_per_merchant),
                (self.terminals, a.terminal_id, lim.max_terminals, lim.events_per_terminal)):
            place = _touch(table, key, limit, PlaceState)
            _append(place, row)
            _trim_entity(place, now - HOUR_MS + 1, cap)

    # --- persistence -----------------------------------------------------------
    def snapshot(self) -> dict:
        """Plain JSON-able data; ``RiskState.restore(snapshot)`` gives the same features."""
        return {
            "cards": [[k, list(map(list, c.events)), c.n, c.log_mean, c.log_var, c.hour_sin,
                       c.hour_cos, list(c.merchants), c.countries, c.last_at_ms, c.last_loc_at_ms,
                       c.last_lat, c.last_lon] for k, c in self.cards.items()],
            "merchants": [[k, list(map(list, p.events))] for k, p in self.merchants.items()],
            "terminals": [[k, list(map(list, p.events))] for k, p in self.terminals.items()],
        }

    @classmethod
    def restore(cls, snap: dict, limits: Limits | None = None,
                windows: bool = True) -> RiskState:
        state = cls(limits, windows)
        for k, ev, n, mean, var, hs, hc, merch, countries, last, loc, lat, lon in snap["cards"]:
            state.cards[k] = CardState(
                events=deque(tuple(e) for e in ev), n=n, log_mean=mean, log_var=var,
                hour_sin=hs, hour_cos=hc, merchants=OrderedDict.fromkeys(merch),
                countries=dict(countries), last_at_ms=last, last_loc_at_ms=loc,
                last_lat=lat, last_lon=lon)
            state.cards[k].inv = _inversions(state.cards[k].events)
        for name in ("merchants", "terminals"):
            table = getattr(state, name)
            for k, ev in snap[name]:
                events = deque(tuple(e) for e in ev)
                table[k] = PlaceState(events=events, inv=_inversions(events))
        return state


class RiskStateStore(Protocol):
    """Where a worker's risk state survives a restart (see routing/README.md)."""

    def load(self, partition: int) -> dict | None: ...

    def save(self, partition: int, snapshot: dict, upto_ms: int) -> None: ...


def partition_of(card_token: str, partitions: int) -> int:
    """The one worker that owns a card's windows: a stable hash of the token, so every
    authorization of a card lands where its history is (merchant and terminal windows
    are per worker and see that worker's share; see the README)."""
    h = 0
    for ch in card_token.encode():
        h = (h * 131 + ch) & 0xFFFFFFFF  # stable across processes, unlike hash()
    return h % partitions
