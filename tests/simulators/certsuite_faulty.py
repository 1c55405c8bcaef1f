"""A deliberately faulty issuer host for the certification tests: the project's
issuer decisions (``Issuer``), then one fault per chosen request, keyed by what the
request carries (PAN and amount, or processing code), never by case name."""

from __future__ import annotations

import dataclasses
import math

import trio

from payswitch.codecs.iso8583 import Message
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


class FaultyAcquirerHost:
    """A small acquirer host with chosen faults: a terminal port (iso87ascii, len2)
    and one link it dials to the network (signs on, forwards with its own STAN,
    answers 91 and reverses with a 0420 when the network does not answer in time).

    Faults: ``no_de90`` (reversals without DE90), ``bad_mac_pc`` (a corrupted MAC on
    requests with these processing codes), ``reuse_stan_amounts`` (the request for
    these amounts reuses the previous STAN)."""

    def __init__(self, network: str, hsm, mac: bool, *, timeout_s: float = 2.0,
                 no_de90: bool = False, bad_mac_pc: frozenset = frozenset(),
                 reuse_stan_amounts: frozenset = frozenset()) -> None:
        self.codec = wire.Codec(network, hsm, mac)
        self.codec.corrupt_mac = lambda m: m.processing_code in bad_mac_pc
        self.timeout_s = timeout_s
        self.no_de90 = no_de90
        self.reuse = reuse_stan_amounts
        self.stan = 500000
        self.last: dict = {}  # terminal (STAN, DE7) -> what was forwarded
        self.link = None
        self.signed_on = trio.Event()

    def next_stan(self, amount=None) -> str:
        if amount not in self.reuse:
            self.stan += 1
        return f"{self.stan:06d}"

    async def run(self, network_port: int, task_status=trio.TASK_STATUS_IGNORED, *,
                  dial_wait_s: float = 10.0):
        """Open the terminal port (its number to ``task_status``), then dial the
        network (retrying up to ``dial_wait_s``: it may not listen yet) and sign on."""
        from payswitch.simulators.terminal import now_fields

        terminal = wire.Listener(wire.Codec("iso87ascii"), self.on_terminal)
        async with trio.open_nursery() as nursery:
            task_status.started(await nursery.start(terminal.serve))
            with trio.fail_after(dial_wait_s) as dialing:
                while True:
                    try:
                        async with wire.dial("127.0.0.1", network_port, self.codec) as link:
                            self.link = link
                            resp, _, _ = await link.request(Message(
                                mti="0800", stan=self.next_stan(), network_code="001",
                                transmission_time=now_fields()["transmission_time"]), 5)
                            assert resp is not None and resp.response_code == "00"
                            self.signed_on.set()
                            dialing.deadline = math.inf  # the bound was for dialing only
                            await trio.sleep_forever()
                    except wire.LinkError:
                        await trio.sleep(0.1)

    async def on_terminal(self, term_link, msg, payload, at_s):
        from payswitch.simulators.certsuite.checks import original_data_of
        from payswitch.simulators.terminal import now_fields

        de7 = now_fields()["transmission_time"]
        if msg.mti == "0400":
            orig = self.last[msg.original_data[4:20]]
            out = orig.replace(mti="0400", stan=self.next_stan(), transmission_time=de7,
                               original_data=None if self.no_de90
                               else original_data_of(orig), pin_block=None, emv=None)
        else:
            out = msg.replace(stan=self.next_stan(msg.amount_minor), transmission_time=de7)
            self.last[msg.stan + msg.transmission_time] = out
        resp, _, _ = await self.link.request(out, self.timeout_s)
        code = resp.response_code if resp is not None else "91"
        answer = msg.replace(mti=msg.response_mti, response_code=code, pin_block=None,
                             emv=None, track2=None,
                             auth_code=resp.auth_code if resp is not None else None)
        await term_link.send(answer)
        if resp is None and msg.mti != "0400":
            rev = out.replace(mti="0420", stan=self.next_stan(), transmission_time=de7,
                              original_data=None if self.no_de90 else original_data_of(out),
                              pin_block=None, emv=None)
            await self.link.send(rev)
