"""Shared pieces of the bank-payments tests: schemas, a pain.001, the peer on a port."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from payswitch.codecs.iso20022 import SchemaStore
from payswitch.codecs.iso20022 import model as m
from payswitch.codecs.iso20022.wire import Codec
from payswitch.ledger.events import hmac_sha256

REPO = Path(__file__).resolve().parents[2]
MAC = hmac_sha256(bytes(32))
NOW = dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC)
DEBTOR = "DE89370400440532013000"
OTHER = "DE02120300000000202051"  # a customer of ours with no money


def schema_dir() -> Path:
    env = os.environ.get("PAYSWITCH_ISO20022_SCHEMAS")
    return Path(env) if env else REPO.parent / "shared" / "iso20022"


def codec() -> Codec:
    # pacs.028's XSD is in no folder we have (codecs/iso20022/README.md): that one
    # message is checked by the model only; every other one against its XSD
    return Codec(SchemaStore(schema_dir()), require_schemas=False)


def creditor(i: int) -> str:
    return f"FR76300060000112345678{i:03d}"[:27]


def pain001(amounts: list[int], *, msg_id: str = "PAIN-1", debtor: str = DEBTOR,
            creditors: list[str] | None = None) -> m.Pain001:
    creditors = creditors or [creditor(i) for i in range(len(amounts))]
    transfers = tuple(m.Transfer(f"E2E-{msg_id}-{i}", a, "EUR", "PEERDEFFXXX", f"SUPPLIER {i}",
                                 m.Account(c), f"invoice {i}")
                      for i, (a, c) in enumerate(zip(amounts, creditors, strict=True)))
    return m.Pain001(msg_id, NOW, "ACME GMBH", (m.PaymentInfo(
        "PMT-1", NOW.date(), "ACME GMBH", m.Account(debtor), "PAYSDEFFXXX", transfers),))
