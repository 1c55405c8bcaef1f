"""Helpers for the switch's own tests: a scripted fake issuer and a terminal client.

Both speak iso87ascii over len2 framing on 127.0.0.1 with real sockets. The fake
issuer is deliberately small: sign-on and echo are answered, everything else goes to
the test's ``answer(msg) -> Message | None`` (None = stay silent).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
import trio.testing

from payswitch.codecs.iso8583 import Message, get
from payswitch.switch.channel import Channel, ChannelClosed, ChannelLimits
from payswitch.switch.config import parse
from payswitch.switch.server import Switch

DIALECT = get("iso87ascii")
TEST_TIMEOUT_S = 30
PAN = "4761739001010010"  # Visa test card
TERMINAL = "TERM0001"


def trio_test(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run an async test under trio with an overall bound."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            with trio.fail_after(TEST_TIMEOUT_S):
                await fn(*args, **kwargs)
        trio.run(main)
    return wrapper


def approve(msg: Message) -> Message:
    return Message(mti=msg.response_mti, pan=msg.pan, processing_code=msg.processing_code,
                   amount_minor=msg.amount_minor, transmission_time=msg.transmission_time,
                   stan=msg.stan, rrn=msg.rrn, auth_code="A1B2C3", response_code="00",
                   terminal_id=msg.terminal_id, acquirer_id=msg.acquirer_id,
                   currency=msg.currency)


class FakeIssuer:
    def __init__(self, answer: Callable[[Message], Message | None] = approve,
                 dialect: str = "iso87ascii", framing: str = "len2") -> None:
        self.answer = answer
        self.dialect = get(dialect)
        self.framing = framing
        self.received: list[Message] = []  # every message, sign-on included
        self.raw: list[bytes] = []
        self.port = 0
        self.connections = 0
        self.streams: set[trio.SocketStream] = set()
        self.signed_on = trio.Event()

    def traffic(self, prefix: str = "") -> list[Message]:
        return [m for m in self.received if m.mti[:2] != "08" and m.mti.startswith(prefix)]

    async def wait_for(self, pred: Callable[[], bool], timeout_s: float = 10) -> None:
        with trio.fail_after(timeout_s):
            while not pred():
                await trio.sleep(0.05)

    async def serve(self, port: int = 0, *, task_status: Any = trio.TASK_STATUS_IGNORED,
                    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        try:
            await trio.serve_listeners(self._conn, listeners)
        finally:
            for listener in listeners:
                listener.socket.close()

    async def drop_all(self) -> None:
        for s in list(self.streams):
            await s.aclose()

    async def _conn(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self.streams.add(stream)
        channel = Channel(stream, ChannelLimits(self.framing, 8192))
        try:
            async with trio.open_nursery() as n:
                while True:
                    try:
                        frame = await channel.receive_frame()
                    except ChannelClosed:
                        return
                    n.start_soon(self._frame, channel, frame.payload)
        finally:
            self.streams.discard(stream)

    async def _frame(self, channel: Channel, payload: bytes) -> None:
        msg = self.dialect.decode(payload)
        self.received.append(msg)
        self.raw.append(payload)
        if msg.mti == "0800":
            if msg.network_code == "001":
                self.signed_on.set()
            resp = Message(mti="0810", transmission_time=msg.transmission_time,
                           stan=msg.stan, response_code="00", network_code=msg.network_code)
        else:
            resp = self.answer(msg)
            if isinstance(resp, tuple):  # (delay_s, message): answer late
                await trio.sleep(resp[0])
                resp = resp[1]
        if resp is not None:
            with contextlib.suppress(ChannelClosed):
                await channel.send_frame(self.dialect.encode(resp))


class Terminal:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.channel = Channel(stream, ChannelLimits("len2", 8192))

    @classmethod
    async def connect(cls, port: int) -> Terminal:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send_raw(self, payload: bytes) -> None:
        await self.channel.send_frame(payload)

    async def send(self, msg: Message) -> None:
        await self.send_raw(DIALECT.encode(msg))

    async def recv_raw(self, timeout_s: float = 10) -> bytes:
        """Next frame; b'' when the switch closed the connection."""
        with trio.fail_after(timeout_s):
            try:
                return (await self.channel.receive_frame()).payload
            except ChannelClosed:
                return b""

    async def recv(self, timeout_s: float = 10) -> Message:
        raw = await self.recv_raw(timeout_s)
        assert raw, "switch closed the connection"
        return DIALECT.decode(raw)

    async def request(self, msg: Message, timeout_s: float = 10) -> Message:
        await self.send(msg)
        return await self.recv(timeout_s)

    async def aclose(self) -> None:
        await self.stream.aclose()


def purchase(stan: str = "000001", amount: int = 1250, pan: str = PAN, mti: str = "0200",
             processing: str = "000000", when: str = "1125120000") -> Message:
    return Message(mti=mti, pan=pan, processing_code=processing, amount_minor=amount,
                   transmission_time=when, stan=stan, local_time="120000",
                   local_date="1125", pos_entry_mode="051", terminal_id=TERMINAL,
                   merchant_id="MERCHANT0000001", currency="978")


def config_dict(dsn: str, issuer_port: int, **link: Any) -> dict[str, Any]:
    return {
        "switch": {"drain_timeout_ms": 2000, "duplicate_wait_ms": 5000},
        "database": {"dsn_env": "PAYSWITCH_TEST_UNSET_DSN", "dsn": dsn, "pool_size": 4},
        "saf": {"retry_interval_ms": 100, "retry_max_ms": 400, "send_timeout_ms": 500},
        "listeners": [{"name": "pos", "kind": "terminal", "port": 0,
                       "idle_timeout_ms": 20_000}],
        "terminals": [{"id": TERMINAL, "listener": "pos"}],
        "links": [{"name": "visa", "host": "127.0.0.1", "port": issuer_port,
                   "request_timeout_ms": 2000, "reconnect_min_ms": 50,
                   "reconnect_max_ms": 200, "signon_timeout_ms": 1000, **link}],
        "routes": [{"prefix": "4", "link": "visa"}],
    }


@contextlib.asynccontextmanager
async def serving(issuer: FakeIssuer) -> AsyncIterator[int]:
    """The fake issuer listening for the duration of the block; yields its port."""
    async with trio.open_nursery() as n:
        await n.start(issuer.serve)
        yield issuer.port
        n.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def running_switch(cfg: dict[str, Any], wait_signed_on: bool = True,
                         ) -> AsyncIterator[Switch]:
    async with trio.open_nursery() as n:
        sw = await n.start(Switch(parse(cfg)).run)
        if wait_signed_on:
            with trio.fail_after(10):
                for link in sw.links.values():
                    await link.signed_on.wait()
        try:
            yield sw
        finally:
            sw.stop()


def virtual(fn: Callable[[], Any]) -> Callable[[], None]:
    """Run the async test ``fn`` under MockClock(autojump_threshold=0): time moves only
    when every task waits, straight to the next deadline (bounded: an hour of it)."""
    def wrapper() -> None:
        async def main() -> None:
            with trio.fail_after(3600):
                await fn()
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    wrapper.__name__ = fn.__name__
    return wrapper
