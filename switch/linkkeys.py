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

The switch can also start a change (``rotate``; ``kill -USR1`` on ``payswitch serve``
rotates every link with a ``zmk``): a new key made in its token and exported under the
ZMK in the same step, sent in the same 0800; used once the network answers 0810 00,
accepted (not used) while waiting; withdrawn and deleted on any other answer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from payswitch.codecs.iso8583 import Message
from payswitch.hsm import keyexchange as kx
from payswitch.hsm.errors import HsmError, HsmInputError, KcvMismatchError, KeyUsageError
from payswitch.switch.config import LinkSection
from payswitch.switch.errors import SwitchError
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

    async def rotate(self, link: Any, key_type: str) -> str:
        """Send the network a new ``key_type`` (ZPK / ZAK) over ``link`` (an
        ``IssuerLink``); the DE39 of its 0810 ("91": none, or the link is down)."""
        name, hsm = self.cfg.name, link.hsm
        ring = self.zpk if key_type == "ZPK" else self.zak
        if hsm is None or not self.cfg.zmk or not ring.current:
            raise SwitchError(f"link {name}: no HSM, zmk or {key_type.lower()} to rotate")
        mac_length = None
        if key_type == "ZAK":
            mac_length = (await hsm.key_info(ring.current)).mac_length
        label = kx.new_label(ring.current, "sw")
        kcv, block = await hsm.generate_key_tr31(label, key_type, self.cfg.zmk,
                                                 mac_length=mac_length)
        msg = kx.build(self.cfg.dialect, key_type, kcv, block, stan=link.next_stan(),
                       transmission_time=time.strftime("%m%d%H%M%S", time.gmtime()))
        ring.offer(label)
        code = "91"
        try:
            code = (await link.request(msg, self.cfg.signon_timeout_ms)).response_code or ""
        except SwitchError:
            pass
        finally:
            if code != "00":
                ring.withdraw()
                await hsm.delete_key(label)
        if code != "00":
            log("link_key_rotate_refused", logging.WARNING, link=name, key_type=key_type,
                kcv=kcv, code=code)
            return code
        previous, retired = ring.current, ring.rotate(label)
        self.kcvs[key_type] = kcv
        log("link_key_changed", link=name, key_type=key_type, label=label, kcv=kcv,
            previous=previous, grace_ms=self.cfg.key_grace_ms, by="switch")
        if retired and retired not in (self.cfg.zpk, self.cfg.zak):
            await hsm.delete_key(retired)
        return code


async def rotate_all(links: Any) -> dict[str, dict[str, str]]:
    """Rotate the ZPK (and the ZAK on MAC links) of every signed-on link with a
    ``zmk`` (``kill -USR1`` on ``payswitch serve``): {link: {key type: DE39}}."""
    out: dict[str, dict[str, str]] = {}
    for link in links.values():
        if not link.cfg.zmk or link.hsm is None or link.state != "signed_on":
            continue
        types = ["ZPK"] if link.cfg.zpk else []
        types += ["ZAK"] if link.cfg.mac else []
        for key_type in types:
            try:
                out.setdefault(link.name, {})[key_type] = await link.keys.rotate(link, key_type)
            except (SwitchError, HsmError) as e:
                log("link_key_rotate_failed", logging.ERROR, link=link.name,
                    key_type=key_type, error=type(e).__name__)
    return out
