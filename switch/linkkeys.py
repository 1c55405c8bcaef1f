"""A link's working keys and the dynamic key exchange (0800 DE70 161) from the network.

The network sends a new ZPK or ZAK as a TR-31 block under the link's ZMK
(``hsm.keyexchange`` has the message layout per dialect). The switch imports it in its
own token (switch role: ``import_key_tr31`` under ``links[].zmk``; the KCV is checked
in the token), answers 0810 00, and switches over: PIN blocks are translated to the
new ZPK, MACs are made under the new ZAK, and MACs under the old ZAK are accepted for
``links[].key_grace_ms``. A refused block or KCV answers 0810 63 and the old key stays.
Logs name labels and KCVs only. Keys received this way live until the next change
(the one before is deleted then); a restart goes back to the configured labels, as the
network sends a new key at sign-on anyway.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from payswitch.codecs.iso8583 import Message
from payswitch.hsm import keyexchange as kx
from payswitch.hsm.errors import HsmError, HsmInputError, KcvMismatchError, KeyUsageError
from payswitch.switch.config import LinkSection
from payswitch.switch.logs import log


class LinkKeys:
    def __init__(self, cfg: LinkSection) -> None:
        self.cfg = cfg
        grace_s = cfg.key_grace_ms / 1000
        self.zpk = kx.KeyRing(cfg.zpk, grace_s, trio.current_time)
        self.zak = kx.KeyRing(cfg.zak, grace_s, trio.current_time)
        self.kcvs: dict[str, str] = {}  # key type -> KCV of the key received last

    async def key_change(self, hsm: Any, dialect: str, msg: Message) -> str:
        """Handle an 0800 key change; the DE39 of the 0810."""
        name = self.cfg.name
        try:
            change = kx.parse(dialect, msg)
        except HsmInputError as e:
            log("link_key_change_refused", logging.WARNING, link=name, reason=str(e))
            return kx.UNPARSED
        if hsm is None or not self.cfg.zmk:
            log("link_key_change_refused", logging.WARNING, link=name,
                key_type=change.key_type, kcv=change.kcv, reason="no zmk on the link")
            return kx.KCV_REFUSED
        ring = self.zpk if change.key_type == "ZPK" else self.zak
        if self.kcvs.get(change.key_type) == change.kcv:  # resent: our 0810 was lost
            log("link_key_change_repeated", link=name, key_type=change.key_type,
                label=ring.current, kcv=change.kcv)
            return "00"
        label = kx.new_label(ring.current or f"{change.key_type.lower()}.{name}", change.kcv)
        try:
            await hsm.import_key_tr31(label, change.key_type, self.cfg.zmk, change.block,
                                      kcv=change.kcv)
        except (KcvMismatchError, KeyUsageError, HsmInputError) as e:
            log("link_key_change_refused", logging.WARNING, link=name,
                key_type=change.key_type, kcv=change.kcv, zmk=self.cfg.zmk,
                reason=type(e).__name__)
            return kx.KCV_REFUSED
        except HsmError as e:
            log("link_key_change_failed", logging.ERROR, link=name,
                key_type=change.key_type, error=type(e).__name__)
            return kx.HSM_FAILED
        previous = ring.current
        self.kcvs[change.key_type] = change.kcv
        retired = ring.rotate(label)
        log("link_key_changed", link=name, key_type=change.key_type, label=label,
            kcv=change.kcv, previous=previous, grace_ms=self.cfg.key_grace_ms)
        if retired and retired not in (self.cfg.zpk, self.cfg.zak):
            try:
                await hsm.delete_key(retired)
            except HsmError as e:
                log("link_key_delete_failed", logging.WARNING, link=name, label=retired,
                    error=type(e).__name__)
        return "00"
