"""A payment's state, rebuilt by folding its journal rows (append-only) in order.

Pure: ``payment_state(rows)`` takes the rows ``Store.history`` returns. The journal is
the record; this is one reading of it (support tooling, reconciliation, tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class PaymentState:
    dup_key: str
    source: str | None = None
    mti: str | None = None
    stan: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    pan_masked: str | None = None
    link: str | None = None  # issuer link it was sent on, if any
    rrn: str | None = None
    issuer_response_code: str | None = None
    response_code: str | None = None  # what the sender was told
    duplicates: int = 0
    recovered: bool = False  # answered by crash recovery
    saf: dict[str, str] = field(default_factory=dict)  # SAF mti -> queued/acked/expired

    @property
    def status(self) -> str:
        rev = self.saf.get("0420")
        if rev == "acked":
            return "reversed"
        if rev == "queued":
            return "reversal_pending"
        if rev == "expired":
            return "reversal_failed"
        if self.response_code is None:
            return "in_flight"
        return "approved" if self.response_code == "00" else "declined"


def payment_state(dup_key: str, rows: list[dict[str, Any]]) -> PaymentState:
    """Fold journal rows (dicts with event, source, link, mti, ... in id order)."""
    st = PaymentState(dup_key)
    for row in rows:
        event = row["event"]
        if event == "request":
            st.source, st.mti, st.stan = row["source"], row["mti"], row["stan"]
            st.amount_minor, st.currency = row["amount_minor"], row["currency"]
            st.pan_masked = row["pan_masked"]
        elif event == "issuer_request":
            st.link, st.rrn = row["link"], row["rrn"]
        elif event == "issuer_response":
            st.issuer_response_code = row["response_code"]
        elif event == "response":
            st.response_code = row["response_code"]
            st.rrn = st.rrn or row["rrn"]
        elif event == "recovered":
            st.response_code, st.recovered = row["response_code"], True
        elif event == "duplicate":
            st.duplicates += 1
        elif event in ("saf_queued", "saf_acked", "saf_expired"):
            mti = row["mti"] or "0000"  # the request's class: 0430 and 0421 -> 0420
            st.saf[mti[:2] + str(int(mti[2]) & ~1) + "0"] = event.removeprefix("saf_")
    return st
