"""A POS / ATM terminal: builds iso87ascii requests and talks to a host over TCP.

``TerminalLink`` is one connection with a reader task; requests are matched to
responses by STAN, so one link can carry several requests in flight (the fixed-rate
load generator does that). ``Terminal`` is the identity (DE41, merchant, STAN
counter) and builds realistic messages for the two profiles:

* POS purchase (0200, processing code 000000, MCC 5411): chip (DE22 051, DE23, DE55)
  or magnetic stripe (DE22 021), track 2 in DE35.
* ATM cash withdrawal (0200, 011000, MCC 6011) and balance inquiry (311000), with a
  PIN block in DE52: 8 random bytes until the HSM builds real ones.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import math
import os
import random
from dataclasses import dataclass

import trio

from payswitch.codecs.errors import CodecError, FramingError
from payswitch.codecs.framing import FrameReader, encode_frame
from payswitch.codecs.iso8583 import Message, get
from payswitch.codecs.tlv import Tlv, as_tag, encode_tlv
from payswitch.simulators.cards import Card

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


def placeholder_emv(amount_minor: int, rng: random.Random) -> bytes:
    """A DE55 with the tags an ARQC request carries (BER-TLV via codecs.tlv); the
    cryptogram (9F26) is random until the HSM computes real ones."""
    today = dt.datetime.now(dt.UTC).strftime("%y%m%d")
    return encode_tlv(Tlv(as_tag(tag), value) for tag, value in (
        ("9F26", rng.randbytes(8)),  # application cryptogram (placeholder)
        ("9F27", b"\x80"),  # cryptogram information data: ARQC
        ("9F10", bytes.fromhex("06010A03A00000")),  # issuer application data
        ("9F37", rng.randbytes(4)),  # unpredictable number
        ("9F36", b"\x00\x01"),  # ATC
        ("95", bytes(5)),  # TVR
        ("9A", bytes.fromhex(today)),  # transaction date
        ("9C", b"\x00"),  # transaction type: purchase
        ("9F02", bytes.fromhex(f"{amount_minor:012d}")),  # amount authorised
        ("5F2A", bytes.fromhex("0840")),  # transaction currency
        ("82", b"\x39\x00"),  # AIP
        ("9F1A", bytes.fromhex("0840")),  # terminal country
    ))


class Terminal:
    """One terminal's identity and STAN counter; builds requests."""

    def __init__(self, terminal_id: str, *, merchant_id: str = "DEMOMERCHANT001",
                 acquirer_id: str = "123456", seed: int | None = None) -> None:
        self.terminal_id = terminal_id
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

    def purchase(self, card: Card, amount_minor: int, *, chip: bool = True,
                 mti: str = "0200") -> Message:
        msg = self._base(mti, card, amount_minor, "000000", "5411",
                         "PAYSWITCH DEMO STORE      SPRINGFIELD US")
        if chip:
            msg.pos_entry_mode = "051"
            msg.card_sequence = "001"
            msg.emv = placeholder_emv(amount_minor, self.rng)
        else:
            msg.pos_entry_mode = "021"
        return msg

    def withdrawal(self, card: Card, amount_minor: int, *, chip: bool = False) -> Message:
        msg = self._base("0200", card, amount_minor, "011000", "6011",
                         "PAYSWITCH DEMO ATM        SPRINGFIELD US")
        msg.pos_entry_mode = "051" if chip else "021"
        if chip:
            msg.card_sequence = "001"
            msg.emv = placeholder_emv(amount_minor, self.rng)
        msg.pin_block = self.rng.randbytes(8)  # placeholder until the HSM lands
        return msg

    def balance_inquiry(self, card: Card) -> Message:
        msg = self._base("0200", card, 0, "311000", "6011",
                         "PAYSWITCH DEMO ATM        SPRINGFIELD US")
        msg.pos_entry_mode = "021"
        msg.pin_block = self.rng.randbytes(8)
        return msg

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
                 max_frame_bytes: int) -> None:
        self.stream = stream
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
        return await self.request_raw(DIALECT.encode(msg), msg.stan, timeout_s)

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
                    connect_timeout_s: float = 5.0):
    """Connect and run the reader; the link is closed when the block exits."""
    with trio.move_on_after(connect_timeout_s) as scope:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as e:
            raise TransportError(f"cannot connect to {host}:{port}: {e.strerror}") from None
    if scope.cancelled_caught:
        raise TransportError(f"connect to {host}:{port} timed out")
    link = TerminalLink(stream, framing, tpdu, max_frame_bytes)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link._read_loop)
        try:
            yield link
        finally:
            nursery.cancel_scope.cancel()
            await link.aclose()


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[min(k, len(sorted_values) - 1)]


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "big")
