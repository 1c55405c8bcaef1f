"""A framed link in a network's dialect, framing and MAC, for the certification
runners: ``dial`` (the network dials an issuer host) and ``Listener`` (an acquirer
host dials the network). Every frame in either direction is kept with its time, so
that a report can show the exchanged messages.

The link MAC is the one ``simulators/network.py`` and the switch use
(``codecs.iso8583.macing``) under ``devkeys.zak(network)``; the HSM is passed in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import trio

from payswitch.codecs.errors import CodecError, FramingError
from payswitch.codecs.framing import FrameReader, encode_frame
from payswitch.codecs.iso8583 import Message, get, macing
from payswitch.hsm import devkeys

# Each network's own dialect and framing (as simulators/network.py DEFAULTS).
WIRE = {"visa": ("visa", "vap"), "mastercard": ("mastercard", "len2"),
        "iso87ascii": ("iso87ascii", "len2")}
READ_BYTES = 65536
MAX_FRAME_BYTES = 8192
TPDU = bytes.fromhex("6000010000")
MAX_FRAMES = 20_000  # frames kept per link for the report; past it they are counted only
MAX_LINKS_KEPT = 64  # connections a listener remembers (a host that reconnects in a loop)


class LinkError(Exception):
    """Connect, send or read failed (the message says which)."""


@dataclass
class Frame:
    direction: str  # "sent" | "received"
    at_s: float
    payload: bytes
    msg: Message | None
    error: str | None = None


class Codec:
    """Encode/decode (+MAC) for one network; the HSM only when the link is MACed."""

    def __init__(self, network: str, hsm=None, mac: bool = False) -> None:
        dialect, self.framing = WIRE[network]
        self.network = network
        self.dialect = get(dialect)
        if mac and hsm is None:
            raise ValueError("a MACed link needs an HSM with the network's ZAK")
        self.hsm = hsm
        self.mac_key = devkeys.zak(network) if mac else None
        self.corrupt_mac: Callable[[Message], bool] | None = None  # tests: faulty hosts

    def encode(self, msg: Message) -> bytes:
        if self.mac_key is None:
            return self.dialect.encode(msg)
        body, hex_form = macing.unsigned(self.dialect, msg)
        mac = self.hsm.generate_mac(self.mac_key, body)
        if self.corrupt_mac and self.corrupt_mac(msg):
            mac = bytes([mac[0] ^ 0x01]) + mac[1:]
        return macing.signed(body, hex_form, mac)

    def frame(self, payload: bytes) -> bytes:
        return encode_frame(self.framing, payload, TPDU if self.framing == "tpdu" else None,
                            max_frame_bytes=MAX_FRAME_BYTES)

    def mac_ok(self, payload: bytes, msg: Message) -> bool | None:
        """None on a link without MAC; else whether the MAC verifies."""
        if self.mac_key is None:
            return None
        body = macing.mac_input(payload, msg)
        return body is not None and self.hsm.verify_mac(self.mac_key, body, msg.mac)


class Link:
    """One TCP connection; responses matched to requests by (response MTI, STAN)."""

    def __init__(self, stream: trio.abc.Stream, codec: Codec) -> None:
        self.stream = stream
        self.codec = codec
        self.frames: list[Frame] = []
        self.unmatched: list[Message] = []
        self._waiters: dict[tuple[str, str], list] = {}
        self._lock = trio.Lock()
        self.closed = False
        self.frames_dropped = 0

    def _keep(self, frame: Frame) -> None:
        if len(self.frames) < MAX_FRAMES:
            self.frames.append(frame)
        else:
            self.frames_dropped += 1

    async def send(self, msg: Message, payload: bytes | None = None) -> None:
        payload = payload if payload is not None else self.codec.encode(msg)
        self._keep(Frame("sent", trio.current_time(), payload, msg))
        async with self._lock:
            try:
                await self.stream.send_all(self.codec.frame(payload))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                self.closed = True
                raise LinkError(f"send failed: {type(e).__name__}") from None

    async def request(self, msg: Message, timeout_s: float
                      ) -> tuple[Message | None, bytes, float]:
        """Send and wait for the answer: (response or None, its payload, seconds)."""
        key = (msg.response_mti, msg.stan or "")
        slot: list = []
        event = trio.Event()
        self._waiters[key] = [event, slot]
        start = trio.current_time()
        try:
            await self.send(msg)
            with trio.move_on_after(timeout_s):
                await event.wait()
        finally:
            self._waiters.pop(key, None)
        elapsed = trio.current_time() - start
        if not slot:
            return None, b"", elapsed
        return slot[0], slot[1], slot[2] - start

    async def read_loop(self, on_request: Callable | None = None) -> None:
        reader = FrameReader(self.codec.framing, MAX_FRAME_BYTES)
        try:
            while True:
                try:
                    data = await self.stream.receive_some(READ_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                if not data:
                    return
                try:
                    frames = reader.feed(data)
                except FramingError:
                    return
                for f in frames:
                    await self._on_frame(f.payload, on_request)
        finally:
            self.closed = True
            for event, _ in self._waiters.values():
                event.set()

    async def _on_frame(self, payload: bytes, on_request) -> None:
        now = trio.current_time()
        try:
            msg = self.codec.dialect.decode(payload)
        except CodecError as e:
            self._keep(Frame("received", now, payload, None, str(e)))
            return
        self._keep(Frame("received", now, payload, msg))
        if msg.is_request:
            if on_request is not None:
                await on_request(self, msg, payload, now)
            return
        waiter = self._waiters.get((msg.mti, msg.stan or ""))
        if waiter is None or waiter[0].is_set():
            if len(self.unmatched) < 1000:
                self.unmatched.append(msg)
            return
        waiter[1].extend((msg, payload, now))
        waiter[0].set()

    async def aclose(self) -> None:
        self.closed = True
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.aclose()


@contextlib.asynccontextmanager
async def dial(host: str, port: int, codec: Codec, connect_timeout_s: float = 5.0,
               on_request=None):
    """Connect to ``host:port`` and run the reader while the block runs (requests from
    the other side go to ``on_request``, as in ``Listener``)."""
    with trio.move_on_after(connect_timeout_s) as scope:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as e:
            raise LinkError(f"cannot connect to {host}:{port}: {e.strerror}") from None
    if scope.cancelled_caught:
        raise LinkError(f"connect to {host}:{port} timed out")
    link = Link(stream, codec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.read_loop, on_request)
        try:
            yield link
        finally:
            # Shielded: a checkpoint in a cancelled scope here would replace an error
            # raised in the block with Cancelled, which the nursery then swallows.
            with trio.CancelScope(shield=True):
                await link.aclose()
            nursery.cancel_scope.cancel()


class Listener:
    """The network side a host dials: every connection becomes a ``Link`` whose
    requests go to ``on_request(link, msg, payload, at_s)``; links kept in ``links``."""

    def __init__(self, codec: Codec, on_request, host: str = "127.0.0.1",
                 port: int = 0, max_links: int = 16) -> None:
        self.codec = codec
        self.on_request = on_request
        self.host = host
        self.port = port
        self.max_links = max_links
        self.links: list[Link] = []

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        if len([x for x in self.links if not x.closed]) >= self.max_links:
            await stream.aclose()
            return
        link = Link(stream, self.codec)
        if len(self.links) >= MAX_LINKS_KEPT:  # forget the oldest closed one
            closed = next((x for x in self.links if x.closed), None)
            if closed is not None:
                self.links.remove(closed)
        self.links.append(link)
        try:
            await link.read_loop(self.on_request)
        finally:
            await link.aclose()
