"""A deliberately faulty issuer host for the certification tests: the project's
issuer decisions (``Issuer``), then one fault per chosen request, keyed by what the
request carries (PAN and amount, or processing code), never by case name."""

from __future__ import annotations

import dataclasses

import trio

from payswitch.codecs.tlv import Tlv, as_tag, decode_tlv, encode_tlv
from payswitch.simulators.certsuite import wire
from payswitch.simulators.issuer import Issuer
from payswitch.simulators.network import reply_header


@dataclasses.dataclass
class Faults:
    wrong_de39: set[int] = dataclasses.field(default_factory=set)  # amounts -> "51"
    changed_de4: set[int] = dataclasses.field(default_factory=set)  # amounts -> DE4 + 1
    no_de38: set[int] = dataclasses.field(default_factory=set)
    bad_arpc: set[int] = dataclasses.field(default_factory=set)
    bad_mac_pc: set[str] = dataclasses.field(default_factory=set)  # processing codes
    slow: dict[int, float] = dataclasses.field(default_factory=dict)  # amount -> seconds


class FaultyIssuerHost:
    def __init__(self, network: str, hsm, mac: bool, faults: Faults) -> None:
        self.issuer = Issuer(hsm=hsm)
        self.faults = faults
        self.codec = wire.Codec(network, hsm, mac)
        self.codec.corrupt_mac = lambda m: m.processing_code in faults.bad_mac_pc \
            and m.mti[:2] in ("01", "02")
        self.listener = wire.Listener(self.codec, self.on_request)

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED):
        await self.listener.serve(task_status=task_status)

    async def on_request(self, link, msg, payload, at_s):
        resp = self.issuer.respond(msg)
        if resp is None:
            return
        resp.header = reply_header(self.codec.dialect.name, msg.header)
        f, amount = self.faults, msg.amount_minor
        fin = msg.mti in ("0100", "0200")
        if fin and amount in f.wrong_de39:
            resp.response_code = "51"
        if fin and amount in f.changed_de4:
            resp.amount_minor = amount + 1
        if fin and amount in f.no_de38:
            resp.auth_code = None
        if fin and amount in f.bad_arpc and resp.emv:
            tags = decode_tlv(resp.emv)
            v = tags[0].value
            resp.emv = encode_tlv([Tlv(as_tag("91"), bytes([v[0] ^ 0xFF]) + v[1:])])
        if fin and amount in f.slow:
            await trio.sleep(f.slow[amount])
        await link.send(resp)
