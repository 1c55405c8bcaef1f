"""The network simulator's side of a dynamic key exchange (``hsm.keyexchange``).

``await change_key(sim, "ZPK")``: make a new ZPK (or ZAK) in the simulator's token,
exported as a TR-31 block under the link's ZMK (``devkeys.zmk(network)``), send it in
an 0800 key change on every open connection and wait for the 0810. While waiting,
the new key is *offered*: accepted on what arrives (the switch may switch over before
its 0810 reaches us) but not yet used. On 0810 00 it becomes the key in use and the
old one is accepted for the simulator's ``key_grace_s``; on a refusal (or no answer
within ``timeout_s``) the new key is withdrawn and deleted, the old one stays.
``bad_kcv=True`` sends a wrong KCV (a test of the switch's refusal).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import trio

from payswitch.codecs.framing import encode_frame
from payswitch.codecs.iso8583 import Message, macing
from payswitch.hsm import HsmError, devkeys
from payswitch.hsm import keyexchange as kx

if TYPE_CHECKING:
    from payswitch.simulators.network import NetworkSimulator

log = logging.getLogger("payswitch.simulators.keychange")


async def change_key(sim: NetworkSimulator, key_type: str = "ZPK", *, bad_kcv: bool = False,
                     timeout_s: float = 5.0, attempts: int = 3) -> str:
    """Send a new key to the switch; the DE39 of its 0810 ("91" when none came)."""
    ring = sim.zpk_ring if key_type == "ZPK" else sim.zak_ring
    if sim.hsm is None or ring is None:
        raise ValueError(f"a {key_type} change needs an hsm (and mac=True for a ZAK)")
    sim.key_changes += 1
    label = kx.new_label(ring.current, f"{sim.key_changes:06x}")
    kcv, block = sim.hsm.generate_key_tr31(label, key_type, devkeys.zmk(sim.network),
                                           mac_length=_mac_length(sim, key_type))
    sent_kcv = f"{int(kcv, 16) ^ 1:06X}" if bad_kcv else kcv
    ring.offer(label)
    code = "91"
    # No answer (the link dropped, or the 0810 was lost): the switch may have the key
    # or not, so it stays offered and is sent again (the switch answers 00 to a key it
    # already has), at most ``attempts`` times.
    for attempt in range(attempts):
        stan = f"{900000 + (sim.key_changes * 8 + attempt) % 100000:06d}"
        msg = kx.build(sim.dialect_name, key_type, sent_kcv, block, stan=stan,
                       transmission_time=time.strftime("%m%d%H%M%S", time.gmtime()))
        code = await _exchange(sim, msg, timeout_s)
        if code != "91":
            break
    sim.key_change_log.append({"key_type": key_type, "kcv": kcv, "code": code})
    if code == "00":
        retired = ring.rotate(label)
        if retired and retired not in (devkeys.zpk(sim.network), devkeys.zak(sim.network)):
            sim.hsm.delete_key(retired)
        log.info("%s: %s changed to %s (KCV %s)", sim.network, key_type, label, kcv)
    else:
        ring.withdraw()
        sim.hsm.delete_key(label)
        log.warning("%s: %s change refused with DE39 %s; KCV %s withdrawn", sim.network,
                    key_type, code, kcv)
    return code


def receive_key_change(sim: NetworkSimulator, msg: Message) -> Message:
    """The 0810 to a key change the switch sent (it rotates its own keys): import the
    block under the ZMK with its KCV checked, switch over, keep the old key in grace."""
    code = kx.UNPARSED
    try:
        change = kx.parse(sim.dialect_name, msg)
        ring = sim.zpk_ring if change.key_type == "ZPK" else sim.zak_ring
        if sim.hsm is None or ring is None:
            code = kx.KCV_REFUSED
        else:
            sim.key_changes += 1
            label = kx.new_label(ring.current, change.kcv)
            code = kx.KCV_REFUSED
            sim.hsm.import_key_tr31(label, change.key_type, devkeys.zmk(sim.network),
                                    change.block, kcv=change.kcv)
            code = "00"
            ring.rotate(label)
            sim.key_change_log.append({"key_type": change.key_type, "kcv": change.kcv,
                                       "code": code, "by": "switch"})
    except HsmError as e:
        log.warning("%s: key change from the switch refused (%s)", sim.network,
                    type(e).__name__)
    return Message(mti="0810", transmission_time=msg.transmission_time, stan=msg.stan,
                   response_code=code, network_code=msg.network_code)


async def _exchange(sim: NetworkSimulator, msg, timeout_s: float) -> str:
    """Send on every open connection (waiting up to ``timeout_s`` for one); the DE39
    of the 0810, "91" when none came."""
    answered = sim.key_change_answers[msg.stan] = trio.Event()
    try:
        with trio.move_on_after(timeout_s):
            while not sim.conns:
                await trio.sleep(0.1)
            for conn in list(sim.conns):
                await _send(sim, conn, msg)
            await answered.wait()
    finally:
        sim.key_change_answers.pop(msg.stan, None)
    return sim.key_change_codes.pop(msg.stan, "91")


async def _send(sim: NetworkSimulator, conn, msg) -> None:
    """A request from the network side, MACed under the ZAK in use (``mac=True``)."""
    if sim.dialect_name == "visa":
        from payswitch.codecs.iso8583.visa import VisaHeader
        msg.header = VisaHeader()
    if sim.mac_key:
        body, hex_form = macing.unsigned(sim.dialect, msg)
        payload = macing.signed(body, hex_form, sim.hsm.generate_mac(sim.mac_key, body))
    else:
        payload = sim.dialect.encode(msg)
    data = encode_frame(sim.framing, payload, None, max_frame_bytes=sim.max_frame_bytes)
    sim.sent.append(payload)
    async with conn.lock:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await conn.send_all(data)


async def change_keys_after(sim: NetworkSimulator, seconds: float) -> None:
    """``seconds`` after the first authorization arrives, change the ZPK (and the ZAK
    with ``mac=True``): ``payswitch simulate --key-change-after S`` (the demo: half
    its traffic time, so mid-run whatever the duration)."""
    while not (sim.stats.by_mti["0100"] or sim.stats.by_mti["0200"]):
        await trio.sleep(0.1)
    await trio.sleep(seconds)
    await change_key(sim, "ZPK")
    if sim.zak_ring is not None:
        await change_key(sim, "ZAK")


def _mac_length(sim: NetworkSimulator, key_type: str) -> int | None:
    if key_type != "ZAK" or sim.hsm is None or sim.zak_ring is None:
        return None
    return sim.hsm.key_info(sim.zak_ring.current).mac_length
