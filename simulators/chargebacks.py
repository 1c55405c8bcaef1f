"""The networks after settlement: first chargebacks, scheme fees, and the faults a
test day injects.

- ``first_chargebacks(data, network, share=, seed=)`` reads an acquirer's outgoing
  file and charges back a share of its sales (each picked with probability
  ``share``, deterministic for a seed; or exactly the ARNs in ``arns``) with a reason
  code drawn from the network's list, as a Visa TC15 or Mastercard 1442/450 file
  (``codecs.clearing.chargeback``).
- ``settle_day(data, network, scheme_fee_bp=, amount_changes=)`` is ``clearing.settle``
  plus what a network also does: keeps a scheme fee (basis points of each accepted
  item, HALF_EVEN, per currency in ``scheme_fee_minor`` and taken off ``net_minor``)
  and, as an injected fault, settles some ARNs for another amount than presented
  (``amount_changes``: ARN -> amount).
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date
from fractions import Fraction

from payswitch.codecs.clearing import base2, ipm
from payswitch.codecs.clearing import chargeback as cbk
from payswitch.codecs.clearing.model import ClearingFile
from payswitch.simulators.clearing import SettlementReport, settle

SENDER = {"visa": "400001", "mastercard": "500001"}  # the networks' own ids


def _read(data: bytes, network: str, blocked: bool) -> ClearingFile:
    return base2.read(data) if network == "visa" else ipm.read(data, blocked=blocked)


def first_chargebacks(data: bytes, network: str, *, blocked: bool = False,
                      share: float = 0.0, seed: int = 0, arns: Iterable[str] = (),
                      file_date: date | None = None) -> bytes:
    f = _read(data, network, blocked)
    rng = random.Random(seed)
    chosen = set(arns)
    reasons = sorted(cbk.VISA_REASONS if network == "visa" else cbk.MASTERCARD_REASONS)
    items = []
    for p in f.presentments:
        pick = rng.random() < share  # drawn for each, so that a seed's picks are stable
        reason = rng.choice(reasons)
        if p.kind == "sale" and (pick or p.arn in chosen):
            items.append(cbk.Chargeback(p, reason))
    out = cbk.ChargebackFile(SENDER[network], file_date or f.file_date, 1,
                             chargebacks=tuple(items))
    return cbk.write(out, network, blocked=blocked)


def settle_day(data: bytes, network: str, *, blocked: bool = False, scheme_fee_bp: int = 0,
               amount_changes: Mapping[str, int] | None = None) -> SettlementReport:
    if amount_changes:
        f = _read(data, network, blocked)
        f = dataclasses.replace(f, presentments=tuple(
            dataclasses.replace(p, amount_minor=amount_changes.get(p.arn, p.amount_minor))
            for p in f.presentments))
        data = base2.write(f) if network == "visa" else ipm.write(f, blocked=blocked)
    report = settle(data, network, blocked=blocked)
    fees: dict[str, int] = defaultdict(int)
    for a in report.accepted:
        sign = -1 if a.kind == "credit" else 1
        fees[a.currency] += sign * round(Fraction(a.amount_minor * scheme_fee_bp, 10_000))
    report.scheme_fee_minor = dict(fees)  # type: ignore[attr-defined]
    report.net_minor = {c: n - fees.get(c, 0) for c, n in report.net_minor.items()}
    return report


def report_dict(report: SettlementReport) -> dict:
    return {**report.to_dict(),
            "scheme_fee_minor": dict(getattr(report, "scheme_fee_minor", {}))}
