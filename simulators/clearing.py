"""The networks' clearing side: read an acquirer's outgoing file, reject bad records
with reasons, price interchange from a small fee table, return a settlement report.

``settle(data, network)`` plays Visa (Base II in) or Mastercard (IPM in, plain or
1014-blocked). A file that does not read as a whole (trailer counts or amounts that
disagree, a truncated record or block, a record that does not parse) is rejected
whole, with the reader's reason naming the record. Otherwise each presentment is
checked as the network would and is accepted or rejected with a reason code:

| reason | when |
|---|---|
| `invalid_account` | PAN fails its Luhn check |
| `not_our_card` | PAN is not of this network (Visa 4; Mastercard 51-55, 2221-2720) |
| `duplicate_arn` | an ARN already seen in this file |
| `zero_amount` | amount 0 |
| `currency_not_supported` | currency not in the settlement table |
| `late_presentment` | transaction date more than ``max_age_days`` before the file date |
| `bin_mismatch` | the ARN's acquirer BIN is not the file's sender |

Interchange: ``FeeRule(mcc, product, rate_bp, fixed_minor)``, the most specific rule
wins (MCC and product, then MCC, then product, then the default), rounded HALF_EVEN to
minor units. Sales and cash: the acquirer receives amount − interchange; credits
(refunds): the acquirer pays amount − interchange (the issuer gives interchange back).
``net_minor`` per currency is what the network pays the acquirer (negative: what it
takes).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from fractions import Fraction

from payswitch.codecs.clearing import base2, ipm
from payswitch.codecs.clearing.errors import ClearingError
from payswitch.codecs.clearing.model import Presentment
from payswitch.codecs.pan import luhn_ok

NETWORKS = ("visa", "mastercard")


@dataclass(frozen=True)
class FeeRule:
    mcc: str | None  # None: any
    product: str | None  # None: any
    rate_bp: int  # basis points of the amount (1/100 of a percent)
    fixed_minor: int = 0


DEFAULT_FEES: tuple[FeeRule, ...] = (
    FeeRule("5411", None, 105, 5),  # grocery
    FeeRule("5411", "F", 50, 0),  # grocery, debit product
    FeeRule("5541", None, 115, 10),  # fuel
    FeeRule("6011", None, 0, 50),  # ATM cash: flat
    FeeRule(None, "MCC", 190, 10),  # Mastercard credit
    FeeRule(None, "MDS", 55, 5),  # Mastercard debit
    FeeRule(None, None, 180, 10),  # anything else
)
DEFAULT_CURRENCIES = frozenset({"840", "978", "826"})


@dataclass(frozen=True)
class Accepted:
    arn: str
    kind: str
    amount_minor: int
    currency: str
    interchange_minor: int


@dataclass(frozen=True)
class Rejected:
    index: int  # 1-based position of the presentment in the file
    arn: str
    reason: str


@dataclass
class SettlementReport:
    network: str
    sender_id: str | None = None
    file_date: str | None = None
    file_error: str | None = None  # the whole file was rejected
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    net_minor: dict[str, int] = field(default_factory=dict)
    interchange_minor: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def rule_for(p: Presentment, fees: tuple[FeeRule, ...]) -> FeeRule:
    def score(r: FeeRule) -> int | None:
        if (r.mcc not in (None, p.mcc)) or (r.product not in (None, p.product_id)):
            return None
        return (2 if r.mcc else 0) + (1 if r.product else 0)
    ranked = [(s, i, r) for i, r in enumerate(fees) if (s := score(r)) is not None]
    if not ranked:
        raise ValueError("fee table has no default rule (mcc=None, product=None)")
    return max(ranked, key=lambda t: (t[0], -t[1]))[2]


def interchange(p: Presentment, fees: tuple[FeeRule, ...] = DEFAULT_FEES) -> int:
    r = rule_for(p, fees)
    return round(Fraction(p.amount_minor * r.rate_bp, 10_000)) + r.fixed_minor


def _network_card(pan: str, network: str) -> bool:
    if network == "visa":
        return pan.startswith("4")
    return 51 <= int(pan[:2]) <= 55 or 2221 <= int(pan[:4]) <= 2720


def _reason(p: Presentment, network: str, sender: str, seen: set[str], file_date,
            currencies: frozenset[str], max_age_days: int) -> str | None:
    if not luhn_ok(p.pan):
        return "invalid_account"
    if not _network_card(p.pan, network):
        return "not_our_card"
    if p.arn in seen:
        return "duplicate_arn"
    if p.amount_minor == 0:
        return "zero_amount"
    if p.currency not in currencies:
        return "currency_not_supported"
    if (file_date - p.txn_date).days > max_age_days:
        return "late_presentment"
    if p.arn[1:7] != sender:
        return "bin_mismatch"
    return None


def settle(data: bytes, network: str, *, blocked: bool = False,
           fees: tuple[FeeRule, ...] = DEFAULT_FEES,
           currencies: frozenset[str] = DEFAULT_CURRENCIES,
           max_age_days: int = 30) -> SettlementReport:
    if network not in NETWORKS:
        raise ValueError(f"network is one of {NETWORKS}")
    report = SettlementReport(network)
    try:
        f = base2.read(data) if network == "visa" else ipm.read(data, blocked=blocked)
    except ClearingError as e:
        report.file_error = str(e)
        return report
    report.sender_id, report.file_date = f.sender_id, f.file_date.isoformat()
    seen: set[str] = set()
    net: dict[str, int] = defaultdict(int)
    fee_total: dict[str, int] = defaultdict(int)
    for i, p in enumerate(f.presentments, start=1):
        why = _reason(p, network, f.sender_id, seen, f.file_date, currencies, max_age_days)
        seen.add(p.arn)
        if why:
            report.rejected.append(Rejected(i, p.arn, why))
            continue
        ic = interchange(p, fees)
        sign = -1 if p.kind == "credit" else 1
        net[p.currency] += sign * (p.amount_minor - ic)
        fee_total[p.currency] += sign * ic
        report.accepted.append(Accepted(p.arn, p.kind, p.amount_minor, p.currency, ic))
    report.net_minor, report.interchange_minor = dict(net), dict(fee_total)
    return report
