"""The switch's card and merchant details for ``payswitch clearing build``.

A presentment needs the PAN, MCC and merchant name, city and country, none of which
the ledger holds. The journal does: each forwarded authorization's ``issuer_request``
row (a stand-in approval's advice row in ``switch_saf``) carries the PAN as an
AES-GCM blob made in the HSM (aad = the payment's dup_key, ``journal.pan_aad``) and
the safe fields of the request (DE18 MCC, DE42 card acceptor id, DE43 name/location).
The ledger's payment id is ``det_id("payment", dup_key)``, so this module maps the
build's rows back to journal rows, decrypts each PAN in the HSM (the DEK never leaves
it) and splits DE43 (name 25, city 13, country alpha-2; the
Visa/Mastercard layout) for the file.

``payswitch clearing build --details payswitch.switch.clearing_details:details``
reads the database from ``$PAYSWITCH_PG_DSN`` and the HSM from ``$SOFTHSM2_CONF``,
``$PAYSWITCH_HSM_TOKEN`` (label), ``$PAYSWITCH_HSM_PIN`` and
``$PAYSWITCH_PAN_DEK_LABEL`` (default ``dek.pan``), as ``ledgerwire.hsm_mac_provider``
does. A payment without a journal row or an undecryptable PAN is an error naming the
payment (never the PAN): the file is then not written.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
import pycountry

from payswitch.hsm.errors import HsmError
from payswitch.ledger.clearing_build import CardDetails, DetailsSource, Selected
from payswitch.ledger.types import LedgerError
from payswitch.switch.journal import pan_aad
from payswitch.switch.ledgerwire import det_id

Decrypt = Callable[[bytes, bytes], str]  # (blob, aad) -> PAN, in the HSM
DEFAULT_MCC = "5999"  # "miscellaneous retail": a request without DE18

# A stand-in approval was never sent: its PAN is on its 0120/0220 advice's SAF row
# (same blob and aad), its merchant fields on the request row.
_ROWS = """
select j.dup_key, j.pan_enc, coalesce(r.fields, '{}'::jsonb) || j.fields
  from switch_journal j
  left join lateral (select fields from switch_journal q
                      where q.dup_key = j.dup_key and q.event = 'request'
                      order by q.id limit 1) r on true
 where j.event = 'issuer_request' and j.pan_enc is not null and j.link = any(%s)
union all
select s.dup_key, s.pan_enc, coalesce(r.fields, '{}'::jsonb)
  from switch_saf s
  left join lateral (select fields from switch_journal q
                      where q.dup_key = s.dup_key and q.event = 'request'
                      order by q.id limit 1) r on true
 where s.mti in ('0120', '0220') and s.pan_enc is not null and s.link = any(%s)
"""


def split_de43(text: str) -> tuple[str, str, str]:
    """DE43 (40): merchant name 1-25, city 26-38, country 39-40 (alpha-2) -> (name
    cut to the presentment's 22, city, alpha-3)."""
    text = (text or "").ljust(40)[:40]
    name, city, alpha2 = text[:25].strip()[:22], text[25:38].strip(), text[38:40].strip()
    country = pycountry.countries.get(alpha_2=alpha2) if len(alpha2) == 2 else None
    return name or "UNKNOWN", city or "UNKNOWN", country.alpha_3 if country else "USA"


def card_details(pan: str, fields: Mapping[str, Any]) -> CardDetails:
    name, city, country = split_de43(str(fields.get("merchant_name") or ""))
    mcc = str(fields.get("mcc") or DEFAULT_MCC)
    return CardDetails(pan=pan, mcc=mcc if len(mcc) == 4 and mcc.isdigit() else DEFAULT_MCC,
                       merchant_name=name, merchant_city=city, merchant_country=country,
                       merchant_id=str(fields.get("merchant_id") or "").strip()[:15])


def journal_details(dsn: str, decrypt: Decrypt) -> DetailsSource:
    """rows -> {payment_id: CardDetails} from the journal at ``dsn``."""
    def source(rows: Sequence[Selected]) -> Mapping[int, CardDetails]:
        wanted = {r.payment_id for r in rows}
        links = sorted({r.network for r in rows})
        found: dict[int, CardDetails] = {}
        with psycopg.connect(dsn) as conn:
            for dup_key, blob, fields in conn.execute(_ROWS, (links, links)):
                pid = det_id("payment", dup_key)
                if pid in wanted and pid not in found:
                    found[pid] = card_details(_pan(decrypt, blob, dup_key, pid), fields)
        missing = wanted - found.keys()
        if missing:
            raise LedgerError(f"{len(missing)} payment(s) without a journal PAN, e.g. "
                              f"{uuid.UUID(int=min(missing))}")
        return found
    return source


def _pan(decrypt: Decrypt, blob: bytes, dup_key: str, pid: int) -> str:
    try:
        return decrypt(bytes(blob), pan_aad(dup_key))
    except HsmError as e:  # the text names the payment, never the blob or the PAN
        raise LedgerError(f"PAN of payment {uuid.UUID(int=pid)} does not decrypt: "
                          f"{type(e).__name__}") from None


def hsm_decrypt(hsm: Any, dek_label: str) -> Decrypt:
    return lambda blob, aad: hsm.decrypt_pan(dek_label, blob, aad)


def details() -> DetailsSource:
    """``--details payswitch.switch.clearing_details:details`` (see the module doc)."""
    from payswitch.hsm import Hsm, TokenConfig
    from payswitch.hsm.token import ENV_CONF, module_path

    dsn = os.environ.get("PAYSWITCH_PG_DSN")
    conf, label = os.environ.get(ENV_CONF), os.environ.get("PAYSWITCH_HSM_TOKEN")
    if not dsn or not conf or not label:
        raise LedgerError(f"need $PAYSWITCH_PG_DSN, ${ENV_CONF} and $PAYSWITCH_HSM_TOKEN")
    hsm = Hsm(TokenConfig(module=module_path(), conf=conf, label=label,
                          pin=os.environ.get("PAYSWITCH_HSM_PIN", "")))
    return journal_details(dsn, hsm_decrypt(hsm, os.environ.get("PAYSWITCH_PAN_DEK_LABEL",
                                                                "dek.pan")))
