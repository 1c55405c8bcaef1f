"""A POS / ATM terminal: builds iso87ascii requests and talks to a host over TCP.

``TerminalLink`` is one connection with a reader task; requests are matched to
responses by STAN, so one link can carry several requests in flight (the fixed-rate
load generator does that). ``Terminal`` is the identity (DE41, merchant, STAN
counter) and builds realistic messages for the two profiles:

* POS purchase (0200, processing code 000000, MCC 5411): chip (DE22 051, DE23, DE55)
  or magnetic stripe (DE22 021), track 2 in DE35.
* ATM cash withdrawal (0200, 011000, MCC 6011) and balance inquiry (311000), with a
  PIN block in DE52.
* Keyed (card not present) purchase: DE22 010, DE2 + DE14, CVV2 in DE48 ``R9203ddd``.

With an ``Hsm`` on the terminal's own token (``devkeys.load_terminal_keys``) the
crypto is real: the PIN block (format 0) is built under the PIN pad's TPK, or under
TDES DUKPT from ``devkeys.BDK`` with the KSN in DE62 (20 hex digits) for a DUKPT
terminal; every purchase and withdrawal carries online PIN (chip and PIN). Track 2
carries the CVV (iCVV for chip), DE55 a real ARQC from the card's UDK (the card's
cryptogram version: Visa CVN 10 or 18, Mastercard M/Chip CVN 16 or 17),
all computed with the issuer keys held by that token: they stand in for the card's
personalisation (a real terminal reads CVV and ARQC from the card). Without an HSM
the PIN block is 8 random bytes, the CVV 000 and the ARQC random (no checks possible).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

import trio

from payswitch.codecs.errors import CodecError, FramingError
from payswitch.codecs.framing import FrameReader, encode_frame
from payswitch.codecs.iso8583 import Message, get, macing
from payswitch.codecs.iso8583.mastercard import build_de48
from payswitch.codecs.tlv import Tlv, as_tag, encode_tlv
from payswitch.hsm import Hsm, devkeys, emv
from payswitch.simulators.cards import Card, track2_with_cvv

DIALECT = get("iso87ascii")
DEFAULT_TPDU = bytes.fromhex("6000010000")
READ_BYTES = 65536


class TransportError(Exception):
    """The link failed (connect, send, closed by the host, bad framing)."""


def now_fields(now: dt.datetime | None = None) -> dict[str, str]:
    now = now or dt.datetime.now(dt.UTC)
    return {
        "transmission_time": now.strftime("%m%d%H%M%S"),
        "local_time": now.strftime("%H%M%S"),
        "local_date": now.strftime("%m%d"),
    }


# Issuer application data (9F10) per cryptogram version: Visa format 0/1 (length 06,
# CVN in byte 3) and Mastercard M/Chip 4 (CVN in byte 2, CVR, DAC, counters).
IADS = {
    10: "06010A03A00000",
    18: "06011203A00000",
    16: "0110A00003220000000000000000000000FF",
    17: "0111A00003220000000000000000000322FF",
}


def emv_tags(amount_minor: int, rng: random.Random, atc: int = 1,
             cvn: int = 18) -> dict[str, bytes]:
    """The tags an ARQC request carries, the cryptogram (9F26) still random."""
    today = dt.datetime.now(dt.UTC).strftime("%y%m%d")
    return {
        "9F26": rng.randbytes(8),  # application cryptogram (set by the card)
        "9F27": b"\x80",  # cryptogram information data: ARQC
        "9F10": bytes.fromhex(IADS[cvn]),  # issuer application data, names the CVN
        "9F37": rng.randbytes(4),  # unpredictable number
        "9F36": atc.to_bytes(2, "big"),  # ATC
        "95": bytes(5),  # TVR
        "9A": bytes.fromhex(today),  # transaction date
        "9C": b"\x00",  # transaction type: purchase
        "9F02": bytes.fromhex(f"{amount_minor:012d}"),  # amount authorised
        "9F03": bytes(6),  # amount, other
        "5F2A": bytes.fromhex("0840"),  # transaction currency
        "82": b"\x39\x00",  # AIP
        "9F1A": bytes.fromhex("0840"),  # terminal country
    }


def encode_emv(tags: dict[str, bytes]) -> bytes:
    return encode_tlv(Tlv(as_tag(tag), value) for tag, value in tags.items())


def placeholder_emv(amount_minor: int, rng: random.Random) -> bytes:
    """A DE55 with the tags an ARQC request carries (BER-TLV via codecs.tlv) and a
    random cryptogram: what a terminal without an HSM sends."""
    return encode_emv(emv_tags(amount_minor, rng))


DUKPT_KSN_DE = 62


class CardCrypto:
    """The card's and the PIN pad's cryptography, computed in the terminal's token."""

    def __init__(self, hsm: Hsm, *, dukpt: bool = False, device_id: int = 0) -> None:
        self.hsm = hsm
        self.dukpt = dukpt
        # KSN: the X9.24 test key set id + a device id, then a 21-bit counter.
        self._ksn_prefix = bytes.fromhex("FFFF987654") + bytes(
            [(device_id >> 8) & 0xFF, device_id & 0xFF])
        self._ksn_counter = 0
        self._cvv: dict[tuple[str, str, bool], str] = {}
        self._pvv: dict[str, str] = {}  # PAN -> the PVV personalised on its track
        self._atc: dict[str, int] = {}

    def _net(self, card: Card) -> str:
        return card.network or "visa"  # unrouted cards never reach an issuer

    def pin_block(self, card: Card, msg: Message) -> None:
        pin, pan = card.entered_pin, card.pan
        if self.dukpt:
            self._ksn_counter += 1
            while bin(self._ksn_counter).count("1") > 10:  # X9.24: at most 10 one bits
                self._ksn_counter += 1
            counter = self._ksn_counter % 0x1FFFFF or 1
            ksn = self._ksn_prefix + (0xE00000 | counter).to_bytes(3, "big")
            msg.pin_block = self.hsm.dukpt_encrypt_pin(devkeys.BDK, ksn, pin, pan)
            msg.other[DUKPT_KSN_DE] = ksn.hex().upper()
        else:
            msg.pin_block = self.hsm.encrypt_pin(devkeys.TPK, pin, pan)

    def track2(self, card: Card, chip: bool) -> str:
        key = (card.pan, card.expiry, chip)
        cvv = self._cvv.get(key)
        if cvv is None:
            cvk = devkeys.cvk(self._net(card))
            cvv = (self.hsm.generate_icvv(cvk, card.pan, card.expiry) if chip else
                   self.hsm.generate_cvv(cvk, card.pan, card.expiry, card.service_code))
            self._cvv[key] = cvv
        if card.wrong == "cvv":
            cvv = f"{(int(cvv) + 1) % 1000:03d}"
        pvv = self._pvv.get(card.pan)
        if pvv is None:  # as personalised: the PVV of the card's own PIN, PVKI 1
            pvv = self._pvv[card.pan] = self.hsm.generate_pvv_clear(
                devkeys.pvk(self._net(card)), card.pan, card.pin)
        return track2_with_cvv(card.pan, card.expiry, card.service_code, cvv, pvv)

    def cvv2(self, card: Card) -> str:
        cvv2 = self.hsm.generate_cvv2(devkeys.cvk(self._net(card)), card.pan, card.expiry)
        return f"{(int(cvv2) + 1) % 1000:03d}" if card.wrong == "cvv2" else cvv2

    def arqc_emv(self, card: Card, psn: str, amount_minor: int, rng: random.Random) -> bytes:
        atc = self._atc.get(card.pan, rng.randrange(1, 1000)) + 1
        self._atc[card.pan] = atc
        tags = emv_tags(amount_minor, rng, atc % 0x10000, card.cvn)
        arqc = self.hsm.generate_arqc(devkeys.mkac(self._net(card)), card.pan, psn,
                                      tags["9F36"], emv.arqc_input(tags, card.cvn),
                                      cvn=card.cvn, un=tags["9F37"])
        if card.wrong == "arqc":
            arqc = bytes([arqc[0] ^ 0xFF]) + arqc[1:]
        tags["9F26"] = arqc
        return encode_emv(tags)


class Terminal:
    """One terminal's identity and STAN counter; builds requests."""

    def __init__(self, terminal_id: str, *, merchant_id: str = "DEMOMERCHANT001",
                 acquirer_id: str = "123456", seed: int | None = None,
                 crypto: CardCrypto | None = None) -> None:
        self.terminal_id = terminal_id
        self.crypto = crypto
        self.merchant_id = merchant_id[:15].ljust(15)
        self.acquirer_id = acquirer_id
        self.rng = random.Random(seed)
        # A random start: two runs against the same host within one second never share
        # (terminal, STAN, DE7), which the host would take for a duplicate.
        self._stan = itertools.count(self.rng.randrange(1, 900_000))

    def next_stan(self) -> str:
        return f"{(next(self._stan) - 1) % 999_999 + 1:06d}"

    def _base(self, mti: str, card: Card, amount_minor: int, processing_code: str,
              mcc: str, name: str) -> Message:
        stan = self.next_stan()
        f = now_fields()
        return Message(
            mti=mti, pan=card.pan, processing_code=processing_code,
            amount_minor=amount_minor, stan=stan, expiry=card.expiry, mcc=mcc,
            pos_condition="00", acquirer_id=self.acquirer_id, track2=card.track2,
            rrn=f"{f['local_date']}{f['local_time'][:2]}{stan}", terminal_id=self.terminal_id,
            merchant_id=self.merchant_id, merchant_name=name.ljust(40)[:40], currency="840",
            **f,
        )

    def _card_data(self, msg: Message, card: Card, amount_minor: int, *, chip: bool,
                   pin: bool) -> Message:
        """Entry mode, track 2 (with its CVV), DE55 and the PIN block, as the card and
        the PIN pad would give them."""
        msg.pos_entry_mode = "051" if chip else "021"
        if chip:
            msg.card_sequence = "001"
        if self.crypto is None:
            if chip:
                msg.emv = placeholder_emv(amount_minor, self.rng)
            if pin:
                msg.pin_block = self.rng.randbytes(8)
            return msg
        msg.track2 = self.crypto.track2(card, chip)
        if chip:
            msg.emv = self.crypto.arqc_emv(card, msg.card_sequence[-2:], amount_minor,
                                           self.rng)
        self.crypto.pin_block(card, msg)  # online PIN on every card-present request
        return msg

    def purchase(self, card: Card, amount_minor: int, *, chip: bool = True,
                 mti: str = "0200") -> Message:
        msg = self._base(mti, card, amount_minor, "000000", "5411",
                         "PAYSWITCH DEMO STORE      SPRINGFIELD US")
        return self._card_data(msg, card, amount_minor, chip=chip, pin=False)

    def keyed_purchase(self, card: Card, amount_minor: int, cvv2: str | None = None,
                       ) -> Message:
        """Card not present: PAN and expiry keyed, CVV2 in DE48 (``R9203ddd``)."""
        msg = self._base("0100", card, amount_minor, "000000", "5999",
                         "PAYSWITCH DEMO WEB SHOP   SPRINGFIELD US")
        msg.track2 = None
        msg.pos_entry_mode = "010"
        if cvv2 is None:
            cvv2 = self.crypto.cvv2(card) if self.crypto else "000"
        msg.additional_data = build_de48("R", {"92": cvv2})
        return msg

    def withdrawal(self, card: Card, amount_minor: int, *, chip: bool = False) -> Message:
        msg = self._base("0200", card, amount_minor, "011000", "6011",
                         "PAYSWITCH DEMO ATM        SPRINGFIELD US")
        return self._card_data(msg, card, amount_minor, chip=chip, pin=True)

    def balance_inquiry(self, card: Card) -> Message:
        msg = self._base("0200", card, 0, "311000", "6011",
                         "PAYSWITCH DEMO ATM        SPRINGFIELD US")
        return self._card_data(msg, card, 0, chip=False, pin=True)

    def echo(self) -> Message:
        return Message(mti="0800", stan=self.next_stan(), network_code="301",
                       transmission_time=now_fields()["transmission_time"],
                       terminal_id=self.terminal_id)


@dataclass
class Result:
    response: Message | None  # None: no response within the timeout
    latency_s: float
    error: str | None = None  # transport failure, when there was one


class TerminalLink:
    """One TCP connection to a host; use ``open_link`` to get one."""

    def __init__(self, stream: trio.SocketStream, framing: str, tpdu: bytes,
                 max_frame_bytes: int, mac: Callable[[bytes], bytes] | None = None) -> None:
        self.stream = stream
        # With a TAK: mac(body) -> 8 bytes over the message up to its MAC (DE64/DE128,
        # codecs.iso8583.macing), e.g. lambda b: hsm.generate_mac("tak.x", b)
        self.mac = mac
        self.framing = framing
        self.tpdu = tpdu
        self.max_frame_bytes = max_frame_bytes
        self.closed = False
        self.unmatched: list[Message] = []
        self._waiters: dict[str, _Waiter] = {}
        self._send_lock = trio.Lock()

    async def send_raw(self, payload: bytes) -> None:
        data = encode_frame(self.framing, payload,
                            self.tpdu if self.framing == "tpdu" else None,
                            max_frame_bytes=self.max_frame_bytes)
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                self.closed = True
                raise TransportError(f"send failed: {type(e).__name__}") from None

    async def request(self, msg: Message, timeout_s: float = 30.0) -> Result:
        if self.mac is None:
            return await self.request_raw(DIALECT.encode(msg), msg.stan, timeout_s)
        body, hex_form = macing.unsigned(DIALECT, msg)
        payload = macing.signed(body, hex_form, self.mac(body))
        return await self.request_raw(payload, msg.stan, timeout_s)

    async def request_raw(self, payload: bytes, stan: str | None,
                          timeout_s: float = 30.0) -> Result:
        """Send bytes; wait for the response carrying ``stan``."""
        if stan in self._waiters:
            raise ValueError("a request with this STAN is already in flight on this link")
        waiter = _Waiter()
        self._waiters[stan] = waiter
        start = trio.current_time()
        try:
            if self.closed:
                raise TransportError("link closed")
            await self.send_raw(payload)
            with trio.move_on_after(timeout_s):
                await waiter.event.wait()
        except TransportError as e:
            return Result(None, trio.current_time() - start, str(e))
        finally:
            self._waiters.pop(stan, None)
        elapsed = trio.current_time() - start
        if waiter.response is None and waiter.error:
            return Result(None, elapsed, waiter.error)
        return Result(waiter.response, elapsed)

    async def _read_loop(self) -> None:
        reader = FrameReader(self.framing, self.max_frame_bytes)
        reason = "link closed by the host"
        try:
            while True:
                try:
                    data = await self.stream.receive_some(READ_BYTES)
                except (trio.BrokenResourceError, OSError):
                    reason = "link reset by the host"
                    break
                except trio.ClosedResourceError:
                    reason = "link closed"
                    break
                if not data:
                    break
                try:
                    frames = reader.feed(data)
                except FramingError:
                    reason = "bad framing from the host"
                    break
                for frame in frames:
                    try:
                        msg = DIALECT.decode(frame.payload)
                    except CodecError:
                        continue  # counted by nobody: the request will time out
                    waiter = self._waiters.get(msg.stan or "")
                    if waiter is None or waiter.event.is_set() or msg.is_request:
                        if len(self.unmatched) < 1000:
                            self.unmatched.append(msg)
                        continue
                    waiter.response = msg
                    waiter.event.set()
        finally:
            self.closed = True
            for waiter in self._waiters.values():
                if not waiter.event.is_set():
                    waiter.error = reason
                    waiter.event.set()

    async def aclose(self) -> None:
        self.closed = True
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.aclose()


class _Waiter:
    __slots__ = ("event", "response", "error")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.response: Message | None = None
        self.error: str | None = None


@contextlib.asynccontextmanager
async def open_link(host: str, port: int, *, framing: str = "len2",
                    tpdu: bytes = DEFAULT_TPDU, max_frame_bytes: int = 8192,
                    connect_timeout_s: float = 5.0,
                    mac: Callable[[bytes], bytes] | None = None):
    """Connect and run the reader; the link is closed when the block exits."""
    with trio.move_on_after(connect_timeout_s) as scope:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as e:
            raise TransportError(f"cannot connect to {host}:{port}: {e.strerror}") from None
    if scope.cancelled_caught:
        raise TransportError(f"connect to {host}:{port} timed out")
    link = TerminalLink(stream, framing, tpdu, max_frame_bytes, mac)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link._read_loop)
            try:
                yield link
            finally:
                # Shielded, before the cancel: a checkpoint in a cancelled scope here
                # would replace an error raised in the block with Cancelled, which the
                # nursery then swallows, and the block would seem to have ended normally.
                with trio.CancelScope(shield=True):
                    await link.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:  # the block's own error, as the caller raised it
            raise group.exceptions[0] from None
        raise


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[min(k, len(sorted_values) - 1)]


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "big")
